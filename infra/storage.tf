# The import inbox: analysts drop CSV / JSON files here; each finalized object
# becomes a CloudEvent delivered to ingest by Eventarc.

resource "google_storage_bucket" "imports" {
  # checkov:skip=CKV_GCP_62:Reads and writes are in Cloud Audit Logs (enable Data Access logs for Cloud Storage if object-level reads must be kept); a second bucket for usage logs adds nothing.
  # checkov:skip=CKV_GCP_78:An import is keyed by (bucket, object, generation): an overwritten object is a new import, and keeping old generations would only keep personal data longer than import_retention_days.
  name                        = "${var.project_id}-${var.name_prefix}-imports"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # An import is keyed by (bucket, object, generation): an overwritten
  # object is a new import, and old generations are not kept.
  versioning {
    enabled = false
  }

  lifecycle_rule {
    condition {
      age = var.import_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.enabled]
}

# Eventarc delivers through a Pub/Sub push subscription whose ack deadline is
# 10 minutes: a file that takes longer to import is delivered again while the
# first delivery still runs. ingest is idempotent on (bucket, object,
# generation), so the repeat changes nothing.
resource "google_eventarc_trigger" "imports" {
  name            = "${var.name_prefix}-imports-finalized"
  location        = var.region
  service_account = google_service_account.eventarc.email

  matching_criteria {
    attribute = "type"
    value     = "google.cloud.storage.object.v1.finalized"
  }

  matching_criteria {
    attribute = "bucket"
    value     = google_storage_bucket.imports.name
  }

  destination {
    cloud_run_service {
      service = module.service["ingest"].name
      region  = var.region
    }
  }

  depends_on = [
    google_project_iam_member.gcs_pubsub_publisher,
    google_project_iam_member.eventarc_event_receiver,
  ]
}
