# PostgreSQL (var.database_version, the newest major Cloud SQL offers) on a
# private address only, TLS required, daily backups and point-in-time
# recovery; connections, disconnections, lock waits and checkpoints logged.

locals {
  # Connections the services can open at most: pool size x max instances,
  # summed, plus the two jobs (one task each).
  database_connection_share  = { for f, s in local.sizing : f => s.db_pool * s.max_instances }
  database_connection_budget = sum(values(local.database_connection_share)) + var.migrate_db_pool + var.lifecycle_db_pool

  # While a service rolls to a new revision its old instances drain as the new
  # ones start, so for a moment it can hold up to twice its share. Cloud Build
  # rolls one service at a time: the headroom needed is the largest share.
  database_rollout_headroom = max(values(local.database_connection_share)...)

  # Everything the precondition below weighs, for scripts/db-connections and
  # the database_connection_budget output.
  database_connections = {
    shares   = merge(local.database_connection_share, { migrate = var.migrate_db_pool, lifecycle = var.lifecycle_db_pool })
    budget   = local.database_connection_budget
    rollout  = local.database_rollout_headroom
    reserve  = var.database_connection_reserve
    required = local.database_connection_budget + local.database_rollout_headroom + var.database_connection_reserve
    max      = var.database_max_connections
  }
}

resource "google_sql_database_instance" "main" {
  # checkov:skip=CKV_GCP_6:TLS is required (ssl_mode ENCRYPTED_ONLY); client certificates (TRUSTED_CLIENT_CERTIFICATE_REQUIRED) would add per-service key distribution on a private-IP-only instance whose clients already authenticate with a password from Secret Manager.
  # checkov:skip=CKV_GCP_108:log_hostname makes PostgreSQL do a reverse DNS lookup per connection; the clients are Cloud Run instances on private addresses, so log_connections' client IP says as much.
  # checkov:skip=CKV_GCP_110:pgAudit is not needed: every change the engine makes is already recorded in its own tables (messages, decisions, webhooks), and the database is reached only by the services and the two jobs.
  # checkov:skip=CKV_GCP_111:log_statement would write every statement, with phone numbers and message bodies, to Cloud Logging.
  # checkov:skip=CKV2_GCP_13:log_duration logs every statement's duration; Query Insights (insights_config) measures query latency without that volume.
  name                = "${var.name_prefix}-pg"
  region              = var.region
  database_version    = var.database_version
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

    # Who connected and for how long: pool churn, exhaustion and stray
    # clients show in the logs.
    database_flags {
      name  = "log_connections"
      value = "on"
    }

    database_flags {
      name  = "log_disconnections"
      value = "on"
    }

    # A statement waiting longer than deadlock_timeout (1 s) for a lock is
    # logged with the blocking process: contention between fan-out ticks,
    # senders and webhooks on the same rows shows up here.
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }

    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }

    # The default, set explicitly: a failing statement is logged with its
    # text; lower levels would log ordinary statements' parameters, which
    # hold phone numbers.
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }

    insights_config {
      query_insights_enabled = true
    }
  }

  lifecycle {
    precondition {
      condition     = local.database_connection_budget + local.database_rollout_headroom + var.database_connection_reserve <= var.database_max_connections
      error_message = "The services can open ${local.database_connection_budget} connections (db_pool x max_instances, summed, plus the two jobs), ${local.database_rollout_headroom} more during a rollout, and ${var.database_connection_reserve} are reserved: more than database_max_connections = ${var.database_max_connections}. Lower db_pool or max_instances in service_overrides, or raise database_max_connections (and the tier)."
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

  # The user owns the schema's objects, so PostgreSQL refuses to drop it
  # while the database exists; on teardown it goes with the instance.
  deletion_policy = "ABANDON"
}
