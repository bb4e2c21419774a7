# Memorystore for the sender's cross-instance rate limits. Private service
# access only, so it is reachable from the VPC and nothing else, and even
# there a client needs the AUTH string and speaks TLS (in-transit encryption,
# server authentication): no other workload in the VPC can read or reset the
# limits.
#
# The sender gets:
#   REDIS_URL      rediss://:AUTH@HOST:PORT, from Secret Manager (it holds the
#                  AUTH string, so it never is a plain environment variable)
#   REDIS_CA_CERT  the PEM bundle of the instance's server CAs, public data,
#                  trusted for the TLS connection instead of the web PKI
#
# Memorystore rotates its server CA: the new CA is listed in server_ca_certs
# before it signs anything, and the next `terraform apply` rolls the sender
# with the updated bundle. Apply at least once between a rotation's start and
# its end (Memorystore notifies; see docs/deploy.md, "Day two").

resource "google_redis_instance" "main" {
  name                    = "${var.name_prefix}-redis"
  region                  = var.region
  tier                    = var.redis_tier
  memory_size_gb          = var.redis_memory_size_gb
  redis_version           = var.redis_version
  authorized_network      = google_compute_network.main.id
  connect_mode            = "PRIVATE_SERVICE_ACCESS"
  transit_encryption_mode = "SERVER_AUTHENTICATION"
  auth_enabled            = true

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
  # With in-transit encryption the instance listens on 6378 (TLS only); `port`
  # reports it.
  redis_url     = "rediss://:${urlencode(google_redis_instance.main.auth_string)}@${google_redis_instance.main.host}:${google_redis_instance.main.port}"
  redis_ca_cert = join("", [for c in google_redis_instance.main.server_ca_certs : c.cert])
}
