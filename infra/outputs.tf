output "inbound_webhook_url" {
  description = "Paste into Twilio: the WhatsApp sender's webhook for incoming messages (HTTP POST)."
  value       = "${local.inbound_base_url}/webhooks/inbound"
}

output "status_webhook_url" {
  description = "Paste into Twilio: the WhatsApp sender's status callback URL (HTTP POST). The sender also sets it per message."
  value       = "${local.status_base_url}/webhooks/status"
}

output "api_url" {
  description = "Base URL of the /v1 REST API (Cloud Run IAM plus an API key)."
  value       = module.service["api"].uri
}

output "service_urls" {
  description = "URL of every Cloud Run service."
  value       = { for f, m in module.service : f => m.uri }
}

output "service_accounts" {
  description = "Runtime service account of every function."
  value = merge(
    { for f, m in module.service : f => m.service_account_email },
    { migrate = google_service_account.migrate.email, lifecycle = google_service_account.lifecycle.email },
  )
}

output "image_registry" {
  description = "Artifact Registry path; images are <this>/<function>:<tag>."
  value       = local.registry
}

output "deployer_service_account" {
  description = "Service account to run the Cloud Build trigger as."
  value       = google_service_account.deployer.email
}

output "build_source_bucket" {
  description = "Bucket for `gcloud builds submit --gcs-source-staging-dir=gs://<this>/source` (the deployer can read it)."
  value       = google_storage_bucket.build_source.name
}

output "migrate_job" {
  description = "Cloud Run job that applies the migrations."
  value       = google_cloud_run_v2_job.migrate.name
}

output "lifecycle_job" {
  description = "Cloud Run job that creates partitions ahead and archives and drops those past their retention (run daily by Cloud Scheduler)."
  value       = google_cloud_run_v2_job.lifecycle.name
}

output "archive_bucket" {
  description = "Archived months of webhook_events, decisions and events: <table>/<YYYY-MM>/<attempt>.ndjson.gz, with a manifest beside each."
  value       = google_storage_bucket.archive.name
}

output "import_bucket" {
  description = "Drop import files (CSV / JSON) here."
  value       = google_storage_bucket.imports.name
}

output "send_topic" {
  description = "Pub/Sub topic of send tasks."
  value       = google_pubsub_topic.send.name
}

output "dead_letter_subscription" {
  description = "Pull subscription holding send tasks that failed 10 deliveries."
  value       = google_pubsub_subscription.send_dead_letter.name
}

output "events_topic" {
  description = "Pub/Sub topic of events (one event per message), pushed to the events service. Producers need roles/pubsub.publisher on it."
  value       = google_pubsub_topic.events.name
}

output "events_dead_letter_subscription" {
  description = "Pull subscription holding events that failed 10 deliveries."
  value       = google_pubsub_subscription.events_dead_letter.name
}

output "database_instance" {
  description = "Cloud SQL instance name."
  value       = google_sql_database_instance.main.name
}

output "database_connection_budget" {
  description = "Connections the services and the two jobs can open at most (db_pool x max_instances, summed), the extra a rollout can take, and database_max_connections."
  value       = "${local.database_connection_budget} + ${local.database_rollout_headroom} during a rollout + ${var.database_connection_reserve} reserved = ${local.database_connections.required}, of ${var.database_max_connections}"
}

output "secrets_to_fill" {
  description = "Secrets whose values are added outside Terraform (gcloud secrets versions add)."
  value       = { for k, s in google_secret_manager_secret.external : k => s.secret_id }
}
