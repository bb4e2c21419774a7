output "name" {
  description = "Cloud Run service name."
  value       = google_cloud_run_v2_service.this.name
}

output "uri" {
  description = "Main URL of the service."
  value       = google_cloud_run_v2_service.this.uri
}

output "service_account_email" {
  description = "Runtime service account; grant it the roles the function needs."
  value       = google_service_account.this.email
}

output "service_account_name" {
  description = "Fully qualified runtime service account (projects/…/serviceAccounts/…), for IAM bindings on the account itself."
  value       = google_service_account.this.name
}
