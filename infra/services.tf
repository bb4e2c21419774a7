# One Cloud Run service per function.
#
# Sizing (override per function with var.service_overrides):
#
# inbound  Twilio webhook, a few short queries per request, so one instance
#          carries 80 at once. min 1: Twilio waits at most 15 s and a cold
#          start on the first user reply is avoidable latency.
# status   Same shape as inbound, but 3-4 callbacks arrive per sent message
#          (queued, sent, delivered, read): twice the instance ceiling.
# sender   Pub/Sub push, each request mostly waits on Twilio's API. 16 per
#          instance keeps the database pool small; the Redis limiter, not
#          instance count, sets the send rate. Scales to zero between campaigns.
# fanout   One tick per minute from Cloud Scheduler; a tick dispatches for
#          about 55 s in one-second rounds at each campaign's rate. Overlapping
#          ticks are safe (they share each campaign's budget under a row lock),
#          so one instance with concurrency 1 is enough; a tick that finds the
#          instance busy is retried by the scheduler and the next one catches up.
# ingest   One import file per instance (concurrency 1): streaming, parsing and
#          batched upserts use both CPUs and memory stays predictable. Up to
#          an hour per file; three files in parallel.
# api      Operator traffic, light; scales to zero.
# events   Short requests like api's (80 at once), but event producers and
#          the events topic's push call it, not operators: a higher ceiling.
#          Scales to zero.
#
# db_pool is DATABASE_MAX_CONNECTIONS: pool size per instance. The sum of
# db_pool x max_instances must stay under the database's max_connections
# (checked in sql.tf).

locals {
  default_sizing = {
    inbound = { min_instances = 1, max_instances = 5, concurrency = 80, cpu = "1", memory = "512Mi", timeout_seconds = 30, db_pool = 5 }
    status  = { min_instances = 1, max_instances = 10, concurrency = 80, cpu = "1", memory = "512Mi", timeout_seconds = 30, db_pool = 5 }
    sender  = { min_instances = 0, max_instances = 10, concurrency = 16, cpu = "1", memory = "512Mi", timeout_seconds = 60, db_pool = 8 }
    fanout  = { min_instances = 0, max_instances = 1, concurrency = 1, cpu = "1", memory = "512Mi", timeout_seconds = 300, db_pool = 4 }
    ingest  = { min_instances = 0, max_instances = 3, concurrency = 1, cpu = "2", memory = "1Gi", timeout_seconds = 3600, db_pool = 4 }
    api     = { min_instances = 0, max_instances = 3, concurrency = 80, cpu = "1", memory = "512Mi", timeout_seconds = 60, db_pool = 5 }
    events  = { min_instances = 0, max_instances = 10, concurrency = 80, cpu = "1", memory = "512Mi", timeout_seconds = 60, db_pool = 5 }
  }

  sizing = {
    for f, defaults in local.default_sizing :
    f => merge(defaults, { for k, v in try(var.service_overrides[f], {}) : k => v if v != null })
  }

  # Twilio signs the exact URL it calls, so PUBLIC_BASE_URL is the URL given
  # to Twilio: the deterministic run.app URL unless a custom domain is set.
  run_app_url = {
    for f in local.functions :
    f => "https://${var.name_prefix}-${f}-${data.google_project.this.number}.${var.region}.run.app"
  }
  inbound_base_url = coalesce(var.inbound_public_base_url, local.run_app_url["inbound"])
  status_base_url  = coalesce(var.status_public_base_url, local.run_app_url["status"])

  database_url_secret = google_secret_manager_secret.database_url.secret_id
  redis_url_secret    = google_secret_manager_secret.redis_url.secret_id
  twilio_token_secret = google_secret_manager_secret.external["twilio-auth-token"].secret_id
  twilio_sid_secret   = google_secret_manager_secret.external["twilio-account-sid"].secret_id
  api_keys_secret     = google_secret_manager_secret.external["api-keys"].secret_id

  function_env = {
    inbound = {
      PUBLIC_BASE_URL = local.inbound_base_url
      DEFAULT_REGION  = var.default_region
    }
    status = {
      PUBLIC_BASE_URL = local.status_base_url
    }
    ingest = {
      IMPORT_BUCKET  = google_storage_bucket.imports.name
      DEFAULT_REGION = var.default_region
    }
    fanout = {
      SEND_TOPIC = google_pubsub_topic.send.name
      # Reconciliation reads Twilio's Messages API as the sender's account.
      TWILIO_WHATSAPP_FROM = var.twilio_whatsapp_from
      PUBLIC_BASE_URL      = local.status_base_url
    }
    sender = {
      REDIS_CA_CERT        = local.redis_ca_cert
      TWILIO_WHATSAPP_FROM = var.twilio_whatsapp_from
      # The StatusCallback the sender puts on every message points at status.
      PUBLIC_BASE_URL  = local.status_base_url
      DEFAULT_TIMEZONE = var.default_timezone
    }
    api = {
      DEFAULT_REGION = var.default_region
      # Where the console's uploaded import files go.
      IMPORT_BUCKET = google_storage_bucket.imports.name
      # The console's test sends go out as the sender's account.
      TWILIO_WHATSAPP_FROM = var.twilio_whatsapp_from
      PUBLIC_BASE_URL      = local.status_base_url
    }
    events = {
      DEFAULT_REGION = var.default_region
      # Triggered messages that are due at once go straight to the sender.
      SEND_TOPIC = google_pubsub_topic.send.name
    }
  }

  function_secrets = {
    inbound = { DATABASE_URL = local.database_url_secret, TWILIO_AUTH_TOKEN = local.twilio_token_secret }
    status  = { DATABASE_URL = local.database_url_secret, TWILIO_AUTH_TOKEN = local.twilio_token_secret }
    ingest  = { DATABASE_URL = local.database_url_secret }
    fanout = {
      DATABASE_URL       = local.database_url_secret
      TWILIO_ACCOUNT_SID = local.twilio_sid_secret
      TWILIO_AUTH_TOKEN  = local.twilio_token_secret
    }
    sender = {
      DATABASE_URL       = local.database_url_secret
      REDIS_URL          = local.redis_url_secret
      TWILIO_ACCOUNT_SID = local.twilio_sid_secret
      TWILIO_AUTH_TOKEN  = local.twilio_token_secret
    }
    api = {
      DATABASE_URL       = local.database_url_secret
      API_KEYS           = local.api_keys_secret
      TWILIO_ACCOUNT_SID = local.twilio_sid_secret
      TWILIO_AUTH_TOKEN  = local.twilio_token_secret
    }
    events = { DATABASE_URL = local.database_url_secret, API_KEYS = local.api_keys_secret }
  }

  # Twilio cannot present a Google identity token, so inbound and status are
  # open to allUsers at the IAM level: the X-Twilio-Signature check in the
  # function is the gate, and nothing unsigned is stored. Every other service
  # is invoked only by the one identity that has a reason to.
  public_functions = ["inbound", "status"]

  function_invokers = {
    inbound = {}
    status  = {}
    ingest  = { eventarc = "serviceAccount:${google_service_account.eventarc.email}" }
    fanout  = { scheduler = "serviceAccount:${google_service_account.scheduler.email}" }
    sender  = { pubsub = "serviceAccount:${google_service_account.pubsub_push.email}" }
    api     = { for m in var.api_invoker_members : m => m }
    # /v1/events is called like the API (Cloud Run IAM plus an API key);
    # /pubsub/events by the events subscription's push identity.
    events = merge(
      { for m in var.api_invoker_members : m => m },
      { pubsub = "serviceAccount:${google_service_account.events_push.email}" },
    )
  }

  # Pub/Sub push, Cloud Scheduler and Eventarc count as internal traffic for
  # services in the same project, so only the public webhooks and the API
  # (api, and events for /v1/events) accept traffic from outside.
  function_ingress = {
    inbound = "INGRESS_TRAFFIC_ALL"
    status  = "INGRESS_TRAFFIC_ALL"
    ingest  = "INGRESS_TRAFFIC_INTERNAL_ONLY"
    fanout  = "INGRESS_TRAFFIC_INTERNAL_ONLY"
    sender  = "INGRESS_TRAFFIC_INTERNAL_ONLY"
    api     = var.api_ingress
    events  = var.api_ingress
  }
}

module "service" {
  source   = "./modules/function_service"
  for_each = local.sizing

  project_id  = var.project_id
  region      = var.region
  name        = "${var.name_prefix}-${each.key}"
  description = "Event Stream Engine: ${each.key}"
  image       = local.images[each.key]

  env = merge(
    {
      GCP_PROJECT              = var.project_id
      RUST_LOG                 = var.rust_log
      DATABASE_MAX_CONNECTIONS = tostring(each.value.db_pool)
    },
    local.function_env[each.key],
    lookup(var.function_env, each.key, {}),
  )
  secret_env = local.function_secrets[each.key]

  min_instances   = each.value.min_instances
  max_instances   = each.value.max_instances
  concurrency     = each.value.concurrency
  cpu             = each.value.cpu
  memory          = each.value.memory
  timeout_seconds = each.value.timeout_seconds

  ingress         = local.function_ingress[each.key]
  public          = contains(local.public_functions, each.key)
  invoker_members = local.function_invokers[each.key]

  network    = google_compute_network.main.name
  subnetwork = google_compute_subnetwork.run.name

  template_annotations = var.secrets_rollout == "" ? {} : { "secrets-rollout" = var.secrets_rollout }
  deletion_protection  = var.deletion_protection

  # A revision that reads DATABASE_URL or REDIS_URL needs a version to exist.
  depends_on = [
    google_secret_manager_secret_version.database_url,
    google_secret_manager_secret_version.redis_url,
  ]
}
