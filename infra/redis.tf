# Memorystore for the sender's cross-instance rate limits. Private service
# access only, so it is reachable from the VPC and nothing else; no AUTH or
# TLS, hence REDIS_URL is a plain environment variable.

resource "google_redis_instance" "main" {
  name                    = "${var.name_prefix}-redis"
  region                  = var.region
  tier                    = var.redis_tier
  memory_size_gb          = var.redis_memory_size_gb
  redis_version           = var.redis_version
  authorized_network      = google_compute_network.main.id
  connect_mode            = "PRIVATE_SERVICE_ACCESS"
  transit_encryption_mode = "DISABLED"
  auth_enabled            = false

  maintenance_policy {
    weekly_maintenance_window {
      day = "SUNDAY"

      start_time {
        hours   = 3
        minutes = 0
      }
    }
  }

  depends_on = [google_service_networking_connection.private_services]
}

locals {
  redis_url = "redis://${google_redis_instance.main.host}:${google_redis_instance.main.port}"
}
