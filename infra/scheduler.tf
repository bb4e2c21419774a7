# The fan-out tick. Cloud Scheduler calls fanout with an OIDC token; a missed
# or refused tick is not retried, the next one a minute later does its work.

resource "google_cloud_scheduler_job" "fanout_tick" {
  name             = "${var.name_prefix}-fanout-tick"
  region           = var.region
  description      = "Starts due campaigns and dispatches due messages."
  schedule         = var.fanout_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "300s" # the fanout service's request timeout

  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "${module.service["fanout"].uri}/tick"

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = module.service["fanout"].uri
    }
  }

  depends_on = [google_project_service.enabled]
}
