# Identities and what each may do. Every Cloud Run service has its own
# runtime account (created in modules/function_service, with secretAccessor
# on exactly the secrets it reads); the bindings below are the rest.
#
#   inbound, status  database URL, Twilio auth token                   (secrets only)
#   sender           database URL, Redis URL, Twilio SID and token     (secrets only)
#   api              database URL, API key hashes                      (secrets only)
#   events           database URL, API key hashes; publisher on the send topic
#   fanout           database URL; publisher on the send topic
#   ingest           database URL; objectViewer on the import bucket
#
# The jobs' accounts are in migrate.tf (database URL) and lifecycle.tf
# (database URL; objectCreator on the archive bucket).
#
# Cloud SQL is reached on its private address with a password, not through
# the Cloud SQL connector, so no runtime account needs roles/cloudsql.client.

# ---------------------------------------------------------------- function grants

resource "google_pubsub_topic_iam_member" "fanout_publisher" {
  topic  = google_pubsub_topic.send.name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${module.service["fanout"].service_account_email}"
}

# Triggered messages that are due at once: events publishes their send tasks
# itself instead of waiting for the next fan-out tick.
resource "google_pubsub_topic_iam_member" "events_publisher" {
  topic  = google_pubsub_topic.send.name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${module.service["events"].service_account_email}"
}

resource "google_storage_bucket_iam_member" "ingest_reader" {
  bucket = google_storage_bucket.imports.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${module.service["ingest"].service_account_email}"
}

# The console's uploads: the api writes new objects to the import bucket (the
# same finalized event then starts the import); it can neither read nor
# overwrite what is there.
resource "google_storage_bucket_iam_member" "api_uploader" {
  bucket = google_storage_bucket.imports.name
  role   = "roles/storage.objectCreator"
  member = "serviceAccount:${module.service["api"].service_account_email}"
}

# ---------------------------------------------------------------- invokers

# Pub/Sub signs its push requests to the sender as this account.
resource "google_service_account" "pubsub_push" {
  account_id   = "${var.name_prefix}-pubsub-push"
  display_name = "Pub/Sub push to ${var.name_prefix}-sender"
  description  = "Identity in the OIDC token of send-task pushes; run.invoker on the sender only."
}

# Pub/Sub signs its pushes of the events topic as this account: a second
# push identity, so that neither subscription can invoke the other's service.
resource "google_service_account" "events_push" {
  account_id   = "${var.name_prefix}-events-push"
  display_name = "Pub/Sub push to ${var.name_prefix}-events"
  description  = "Identity in the OIDC token of event pushes; run.invoker on events only."
}

# Cloud Scheduler calls fanout as this account.
resource "google_service_account" "scheduler" {
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "Cloud Scheduler tick to ${var.name_prefix}-fanout"
  description  = "Identity in the OIDC token of fan-out ticks; run.invoker on fanout only."
}

# Eventarc delivers import events to ingest as this account.
resource "google_service_account" "eventarc" {
  account_id   = "${var.name_prefix}-eventarc"
  display_name = "Eventarc delivery to ${var.name_prefix}-ingest"
  description  = "Trigger identity of the import trigger; run.invoker on ingest only."
}

resource "google_project_iam_member" "eventarc_event_receiver" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = "serviceAccount:${google_service_account.eventarc.email}"
}

# Cloud Storage publishes object events to the Pub/Sub topic that Eventarc
# creates for the trigger; its service agent needs publisher for that.
data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

resource "google_project_iam_member" "gcs_pubsub_publisher" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# The Pub/Sub service agent mints the OIDC tokens for push deliveries (ours
# and Eventarc's). Projects created after April 2021 grant this implicitly;
# the explicit grant, limited to the three accounts, makes older ones work too.
resource "google_service_account_iam_member" "pubsub_token_creator" {
  for_each = {
    pubsub_push = google_service_account.pubsub_push.name
    events_push = google_service_account.events_push.name
    eventarc    = google_service_account.eventarc.name
  }

  service_account_id = each.value
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

# ---------------------------------------------------------------- deployer (Cloud Build)

# Cloud Build runs cloudbuild.yaml as this account: push images, point the
# services and the jobs at them, run the migration job. Every grant is on the
# one resource it is needed for; it cannot read secrets or data, and it cannot
# touch any other Cloud Run service or job in the project.
resource "google_service_account" "deployer" {
  account_id   = "${var.name_prefix}-deployer"
  display_name = "Cloud Build deployer"
  description  = "Runs cloudbuild.yaml: pushes images, runs migrations, rolls out services."
}

# Build logs (the build runs with CLOUD_LOGGING_ONLY): project-level only.
resource "google_project_iam_member" "deployer_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.deployer.email}"
}

# `gcloud run services update --image` on exactly the engine's services.
resource "google_cloud_run_v2_service_iam_member" "deployer" {
  for_each = module.service

  project  = var.project_id
  location = var.region
  name     = each.value.name
  role     = "roles/run.developer"
  member   = "serviceAccount:${google_service_account.deployer.email}"
}

# `gcloud run jobs update --image` on the two jobs, and `gcloud run jobs
# execute --wait` on the migration job.
resource "google_cloud_run_v2_job_iam_member" "deployer" {
  for_each = {
    migrate   = google_cloud_run_v2_job.migrate.name
    lifecycle = google_cloud_run_v2_job.lifecycle.name
  }

  project  = var.project_id
  location = var.region
  name     = each.value
  role     = "roles/run.developer"
  member   = "serviceAccount:${google_service_account.deployer.email}"
}

# The grant on the migration job was a single resource before the lifecycle
# job came; keep it in place instead of removing and re-adding the binding.
moved {
  from = google_cloud_run_v2_job_iam_member.deployer
  to   = google_cloud_run_v2_job_iam_member.deployer["migrate"]
}

# Source uploads of `gcloud builds submit` (the bootstrap build, and any build
# started by hand): the caller stages the source here with
# --gcs-source-staging-dir and the build, running as the deployer, reads it.
# Triggered builds fetch their source from the repository connection instead.
resource "google_storage_bucket" "build_source" {
  # checkov:skip=CKV_GCP_62:Holds only source archives of this repository; Cloud Audit Logs record access.
  # checkov:skip=CKV_GCP_78:Each upload is a new object, deleted after a week; nothing is overwritten.
  name                        = "${var.project_id}-${var.name_prefix}-build-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true

  lifecycle_rule {
    condition {
      age = 7
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.enabled]
}

resource "google_storage_bucket_iam_member" "deployer_source_reader" {
  bucket = google_storage_bucket.build_source.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.deployer.email}"
}

resource "google_artifact_registry_repository_iam_member" "deployer_writer" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.deployer.email}"
}

# Deploying a revision that runs as an account requires actAs on it.
resource "google_service_account_iam_member" "deployer_act_as" {
  for_each = merge(
    { for f, m in module.service : f => m.service_account_name },
    { migrate = google_service_account.migrate.name, lifecycle = google_service_account.lifecycle.name },
  )

  service_account_id = each.value
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.deployer.email}"
}
