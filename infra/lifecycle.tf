# The data-lifecycle job: the same image build with FUNCTION=lifecycle, run
# daily by Cloud Scheduler. It creates the monthly partitions of the
# append-only tables (webhook_events, decisions, events) months ahead, and
# moves every month past its table's retention to the archive bucket (gzipped
# newline-delimited JSON plus a manifest, one pair per table and month) before
# dropping the partition. Restores are run by an operator with their own
# credentials (docs/deploy.md, "Archive and retention").

# Once a partition is dropped, its archive object is the only copy: nothing
# in this configuration deletes or replaces one before
# archive_delete_after_days.
#
# - Every object is written once under a name no other attempt uses
#   (<table>/<YYYY-MM>/<attempt-uuid>.ndjson.gz), and the job can create
#   objects but not read, list, overwrite or delete them: there is never a
#   noncurrent version to keep, so versioning is off.
# - Soft delete is on, for archive_soft_delete_days (Cloud Storage allows 7
#   to 90): an object deleted or replaced by a person with the rights to, or
#   deleted by the rule below, can be restored within that time. Its cost is
#   that window's storage of the deleted objects.
# - No retention lock: a locked retention policy cannot be shortened or
#   removed, so it would also stop the deletion of one person's data on
#   request.
resource "google_storage_bucket" "archive" {
  # checkov:skip=CKV_GCP_62:Writes and deletes are in Cloud Audit Logs (enable Data Access logs for Cloud Storage if object reads must be kept too); a second bucket for usage logs adds nothing.
  # checkov:skip=CKV_GCP_78:Objects are written once under unique names by an account that cannot overwrite them, so versioning would never keep a noncurrent version; soft delete (below) covers deletions.
  name                        = "${var.project_id}-${var.name_prefix}-archive"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = false
  }

  soft_delete_policy {
    retention_duration_seconds = local.archive_soft_delete_days * 24 * 60 * 60
  }

  # Archives are read only for a restore or an audit: colder classes as they
  # age. Each class's minimum storage duration (Coldline 90 days, Archive 365)
  # is met before the next rule moves the object on.
  lifecycle_rule {
    condition {
      age                   = 90
      matches_storage_class = ["STANDARD"]
    }
    action {
      type          = "SetStorageClass"
      storage_class = "COLDLINE"
    }
  }

  lifecycle_rule {
    condition {
      age                   = 365
      matches_storage_class = ["COLDLINE"]
    }
    action {
      type          = "SetStorageClass"
      storage_class = "ARCHIVE"
    }
  }

  lifecycle_rule {
    condition {
      age = var.archive_delete_after_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "lifecycle" {
  account_id   = "${var.name_prefix}-lifecycle-run"
  display_name = "Cloud Run job: ${var.name_prefix}-lifecycle"
  description  = "Runtime identity of the data-lifecycle job: database URL, and object create on the archive bucket."
}

resource "google_secret_manager_secret_iam_member" "lifecycle_database_url" {
  secret_id = google_secret_manager_secret.database_url.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.lifecycle.email}"
}

# Write-only: objectCreator creates objects and nothing else. Replacing an
# existing object needs storage.objects.delete, which it does not have, so an
# archive the job has written cannot be changed by the job either.
resource "google_storage_bucket_iam_member" "lifecycle_archive_writer" {
  bucket = google_storage_bucket.archive.name
  role   = "roles/storage.objectCreator"
  member = "serviceAccount:${google_service_account.lifecycle.email}"
}

resource "google_cloud_run_v2_job" "lifecycle" {
  name                = "${var.name_prefix}-lifecycle"
  location            = var.region
  deletion_protection = var.deletion_protection

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account = google_service_account.lifecycle.email
      # Exporting a month of webhook_events streams every row of it once.
      timeout = "${var.lifecycle_timeout_seconds}s"
      # A retry archives under a new attempt id: a partition is dropped only
      # after its archive is written, so an attempt that died leaves at most
      # an object without a manifest beside it, and its partition in place.
      max_retries = 1

      vpc_access {
        egress = "PRIVATE_RANGES_ONLY"

        network_interfaces {
          network    = google_compute_network.main.name
          subnetwork = google_compute_subnetwork.run.name
        }
      }

      containers {
        image = local.images["lifecycle"]
        args  = ["run"]

        # A Cloud Run job's files live in memory, the month's archive file
        # among them until it is uploaded.
        resources {
          limits = {
            cpu    = var.lifecycle_cpu
            memory = var.lifecycle_memory
          }
        }

        env {
          name  = "RUST_LOG"
          value = var.rust_log
        }

        env {
          name  = "DATABASE_MAX_CONNECTIONS"
          value = tostring(var.lifecycle_db_pool)
        }

        env {
          name  = "ARCHIVE_BUCKET"
          value = google_storage_bucket.archive.name
        }

        # How long an object can still be had: the delete rule's age plus
        # the soft-delete window. An erased number is kept (for redaction on
        # restore) until every archive that may hold it is gone.
        env {
          name  = "ARCHIVE_KEEP_DAYS"
          value = tostring(var.archive_delete_after_days + local.archive_soft_delete_days)
        }

        # Only what the variables set: the job's own defaults apply otherwise.
        dynamic "env" {
          for_each = local.lifecycle_settings
          content {
            name  = env.key
            value = env.value
          }
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
    google_secret_manager_secret_iam_member.lifecycle_database_url,
    google_secret_manager_secret_version.database_url,
  ]
}

locals {
  archive_soft_delete_days = 30

  # RETAIN_<TABLE>_MONTHS and PARTITIONS_AHEAD_MONTHS, for the values given.
  lifecycle_settings = merge(
    { for table, months in var.retention_months : "RETAIN_${upper(table)}_MONTHS" => tostring(months) },
    var.partitions_ahead_months == null ? {} : { PARTITIONS_AHEAD_MONTHS = tostring(var.partitions_ahead_months) },
  )
}

# The daily run. Cloud Scheduler calls the Cloud Run Admin API's jobs:run
# with an OAuth access token of its own account, which may run this job and
# nothing else. A missed or failed run is not retried: the next day's run
# does the same work, and partitions exist months ahead.
resource "google_service_account" "lifecycle_scheduler" {
  account_id   = "${var.name_prefix}-lifecycle-sched"
  display_name = "Cloud Scheduler run of ${var.name_prefix}-lifecycle"
  description  = "Identity in the OAuth token of the daily lifecycle run; run.invoker on the lifecycle job only."
}

# run.invoker on a job grants run.jobs.run (an execution as configured, no
# overrides of its arguments or environment).
resource "google_cloud_run_v2_job_iam_member" "lifecycle_scheduler" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_job.lifecycle.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.lifecycle_scheduler.email}"
}

resource "google_cloud_scheduler_job" "lifecycle" {
  name             = "${var.name_prefix}-lifecycle-daily"
  region           = var.region
  description      = "Creates partitions ahead, archives and drops partitions past their retention."
  schedule         = var.lifecycle_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "60s" # jobs:run returns as soon as the execution starts

  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.region}/jobs/${google_cloud_run_v2_job.lifecycle.name}:run"

    oauth_token {
      service_account_email = google_service_account.lifecycle_scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [
    google_project_service.enabled,
    google_cloud_run_v2_job_iam_member.lifecycle_scheduler,
  ]
}
