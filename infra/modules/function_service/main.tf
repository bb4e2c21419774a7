# One Cloud Run (v2) service: its own runtime identity, its secrets, its
# sizing, Direct VPC egress, and who may invoke it.

resource "google_service_account" "this" {
  project      = var.project_id
  account_id   = coalesce(var.service_account_id, "${var.name}-run")
  display_name = "Cloud Run: ${var.name}"
  description  = "Runtime identity of the ${var.name} Cloud Run service."
}

resource "google_secret_manager_secret_iam_member" "env" {
  for_each = var.secret_env

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.this.email}"
}

resource "google_cloud_run_v2_service" "this" {
  project             = var.project_id
  name                = var.name
  location            = var.region
  description         = var.description
  ingress             = var.ingress
  deletion_protection = var.deletion_protection

  template {
    service_account                  = google_service_account.this.email
    max_instance_request_concurrency = var.concurrency
    timeout                          = "${var.timeout_seconds}s"
    annotations                      = var.template_annotations

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    vpc_access {
      egress = var.vpc_egress

      network_interfaces {
        network    = var.network
        subnetwork = var.subnetwork
      }
    }

    containers {
      image = var.image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        # CPU only while a request is being served: every function does its
        # work inside a request (webhook, push, tick, CloudEvent).
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = var.env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = var.secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }

      # /readyz answers 200 once the database is reachable, so a revision
      # whose DATABASE_URL or network path is wrong never takes traffic.
      startup_probe {
        period_seconds    = 5
        timeout_seconds   = 4
        failure_threshold = 24

        http_get {
          path = var.startup_probe_path
        }
      }

      # /healthz only says the process is up: a database outage must not
      # turn into a restart loop.
      liveness_probe {
        period_seconds    = 30
        timeout_seconds   = 5
        failure_threshold = 3

        http_get {
          path = var.liveness_probe_path
        }
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }

  lifecycle {
    # Cloud Build rolls new images out with `gcloud run services update
    # --image`; Terraform owns everything else about the service.
    ignore_changes = [
      client,
      client_version,
      template[0].containers[0].image,
    ]
  }

  # The revision cannot start before its identity may read its secrets.
  depends_on = [google_secret_manager_secret_iam_member.env]
}

resource "google_cloud_run_v2_service_iam_member" "public" {
  count = var.public ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.this.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = var.invoker_members

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.this.name
  role     = "roles/run.invoker"
  member   = each.value
}
