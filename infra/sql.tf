# PostgreSQL 15 on a private address only, TLS required, daily backups and
# point-in-time recovery.

locals {
  # Connections the services can open at most: pool size x max instances,
  # summed, plus the migration job.
  database_connection_share  = { for f, s in local.sizing : f => s.db_pool * s.max_instances }
  database_connection_budget = sum(values(local.database_connection_share)) + var.migrate_db_pool

  # While a service rolls to a new revision its old instances drain as the new
  # ones start, so for a moment it can hold up to twice its share. Cloud Build
  # rolls one service at a time: the headroom needed is the largest share.
  database_rollout_headroom = max(values(local.database_connection_share)...)
}

resource "google_sql_database_instance" "main" {
  name                = "${var.name_prefix}-pg"
  region              = var.region
  database_version    = "POSTGRES_15"
  deletion_protection = var.deletion_protection

  settings {
    tier                        = var.database_tier
    edition                     = "ENTERPRISE"
    availability_type           = var.database_availability_type
    disk_type                   = "PD_SSD"
    disk_size                   = var.database_disk_size_gb
    disk_autoresize             = true
    deletion_protection_enabled = var.deletion_protection

    ip_configuration {
      ipv4_enabled    = false
      private_network = google_compute_network.main.id
      ssl_mode        = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      start_time                     = "02:00"
      point_in_time_recovery_enabled = true
      transaction_log_retention_days = var.database_log_retention_days

      backup_retention_settings {
        retained_backups = var.database_backup_count
        retention_unit   = "COUNT"
      }
    }

    maintenance_window {
      day          = 7 # Sunday
      hour         = 3
      update_track = "stable"
    }

    database_flags {
      name  = "max_connections"
      value = tostring(var.database_max_connections)
    }

    insights_config {
      query_insights_enabled = true
    }
  }

  lifecycle {
    precondition {
      condition     = local.database_connection_budget + local.database_rollout_headroom + var.database_connection_reserve <= var.database_max_connections
      error_message = "The services can open ${local.database_connection_budget} connections (db_pool x max_instances, summed, plus the migration job), ${local.database_rollout_headroom} more during a rollout, and ${var.database_connection_reserve} are reserved: more than database_max_connections = ${var.database_max_connections}. Lower db_pool or max_instances in service_overrides, or raise database_max_connections (and the tier)."
    }
  }

  depends_on = [google_service_networking_connection.private_services]
}

resource "google_sql_database" "app" {
  name     = "ese"
  instance = google_sql_database_instance.main.name
}

# URL-safe by construction (letters and digits only), so it goes into
# DATABASE_URL without escaping.
resource "random_password" "database" {
  length  = 40
  special = false
}

resource "google_sql_user" "app" {
  name     = "ese"
  instance = google_sql_database_instance.main.name
  password = random_password.database.result
}
