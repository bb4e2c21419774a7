# The migration job: the same image build with FUNCTION=migrate, which applies
# migrations/ to DATABASE_URL and exits. Cloud Build points it at each new
# image and runs it (gcloud run jobs execute --wait) before rolling services.

resource "google_service_account" "migrate" {
  account_id   = "${var.name_prefix}-migrate-run"
  display_name = "Cloud Run job: ${var.name_prefix}-migrate"
  description  = "Runtime identity of the schema migration job."
}

resource "google_secret_manager_secret_iam_member" "migrate_database_url" {
  secret_id = google_secret_manager_secret.database_url.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.migrate.email}"
}

resource "google_cloud_run_v2_job" "migrate" {
  name                = "${var.name_prefix}-migrate"
  location            = var.region
  deletion_protection = var.deletion_protection

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account = google_service_account.migrate.email
      timeout         = "900s"
      # sqlx runs each migration in a transaction and records it, so a retry
      # after a dropped connection resumes where the first attempt stopped.
      max_retries = 1

      vpc_access {
        egress = "PRIVATE_RANGES_ONLY"

        network_interfaces {
          network    = google_compute_network.main.name
          subnetwork = google_compute_subnetwork.run.name
        }
      }

      containers {
        image = local.images["migrate"]

        resources {
          limits = {
            cpu    = "1"
            memory = "512Mi"
          }
        }

        env {
          name  = "RUST_LOG"
          value = var.rust_log
        }

        env {
          name  = "DATABASE_MAX_CONNECTIONS"
          value = tostring(var.migrate_db_pool)
        }

        env {
          name = "DATABASE_URL"
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.database_url.secret_id
              version = "latest"
            }
          }
        }
      }
    }
  }

  lifecycle {
    # Cloud Build sets the image on every release (gcloud run jobs update --image).
    ignore_changes = [
      client,
      client_version,
      template[0].template[0].containers[0].image,
    ]
  }

  depends_on = [
    google_secret_manager_secret_iam_member.migrate_database_url,
    google_secret_manager_secret_version.database_url,
  ]
}
