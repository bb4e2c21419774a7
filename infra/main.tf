# Shared lookups, the image registry and how image references are built.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  functions = ["inbound", "status", "ingest", "fanout", "sender", "api", "events"]

  # Cloud Run jobs built from the same Dockerfile (migrate.tf, lifecycle.tf).
  jobs = ["migrate", "lifecycle"]

  registry = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"

  # REGISTRY/FUNCTION@sha256:… when a digest is given, REGISTRY/FUNCTION:TAG otherwise.
  images = {
    for f in concat(local.functions, local.jobs) :
    f => (
      contains(keys(var.image_digests), f)
      ? "${local.registry}/${f}@${var.image_digests[f]}"
      : "${local.registry}/${f}:${var.image_tag}"
    )
  }

  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_artifact_registry_repository" "images" {
  # checkov:skip=CKV_GCP_84:Images hold no data or secrets, only the public code built from this repository; Google-managed encryption is enough and a customer-managed key would add a KMS key to run and rotate.
  location      = var.region
  repository_id = var.artifact_repository
  format        = "DOCKER"
  description   = "Event Stream Engine function images, one package per function."

  # Every build pushes nine images; keep the recent ones (rollbacks) and
  # let older ones go.
  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"

    most_recent_versions {
      keep_count = 30
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"

    condition {
      older_than = "7776000s" # 90 days
    }
  }

  depends_on = [google_project_service.enabled]
}
