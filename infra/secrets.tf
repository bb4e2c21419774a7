# Secret Manager holds every secret the functions read. Terraform writes the
# database and Redis ones; the others are created empty here and their values are added
# out of band (gcloud secrets versions add, see docs/deploy.md) so that they
# never pass through Terraform state.

resource "google_secret_manager_secret" "database_password" {
  secret_id = "${var.name_prefix}-database-password"

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret_version" "database_password" {
  secret      = google_secret_manager_secret.database_password.id
  secret_data = random_password.database.result
}

resource "google_secret_manager_secret" "database_url" {
  secret_id = "${var.name_prefix}-database-url"

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

# sslmode=require: the instance accepts only encrypted connections.
resource "google_secret_manager_secret_version" "database_url" {
  secret      = google_secret_manager_secret.database_url.id
  secret_data = "postgres://${google_sql_user.app.name}:${random_password.database.result}@${google_sql_database_instance.main.private_ip_address}:5432/${google_sql_database.app.name}?sslmode=require"
}

resource "google_secret_manager_secret" "redis_url" {
  secret_id = "${var.name_prefix}-redis-url"

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

# rediss://:AUTH@HOST:6378 (redis.tf): the AUTH string is a credential.
resource "google_secret_manager_secret_version" "redis_url" {
  secret      = google_secret_manager_secret.redis_url.id
  secret_data = local.redis_url
}

# Values set outside Terraform:
#   twilio-auth-token   TWILIO_AUTH_TOKEN, one token or "new,old" while rotating
#   twilio-account-sid  TWILIO_ACCOUNT_SID (AC…)
#   api-keys            API_KEYS, comma-separated SHA-256 hex hashes of API keys
resource "google_secret_manager_secret" "external" {
  for_each = toset(["twilio-auth-token", "twilio-account-sid", "api-keys"])

  secret_id = "${var.name_prefix}-${each.key}"

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}
