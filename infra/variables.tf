# ---------------------------------------------------------------- project

variable "project_id" {
  description = "GCP project to deploy into."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project id (6-30 lowercase letters, digits, hyphens)."
  }
}

variable "region" {
  description = "Region for every regional resource (Cloud Run, Cloud SQL, Redis, bucket, Eventarc, Scheduler)."
  type        = string
  default     = "europe-west1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must look like europe-west1 or us-central1."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name (services are <prefix>-<function>)."
  type        = string
  default     = "ese"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,10}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3-12 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "labels" {
  description = "Extra labels put on every resource that takes labels."
  type        = map(string)
  default     = {}
}

variable "deletion_protection" {
  description = "Protect the database and the Cloud Run services and job from being destroyed (Terraform and Cloud SQL side). Turn off only to tear a test project down."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------- images

variable "artifact_repository" {
  description = "Artifact Registry Docker repository id; images are REGION-docker.pkg.dev/PROJECT/REPOSITORY/FUNCTION."
  type        = string
  default     = "ese"
}

variable "image_tag" {
  description = "Tag used for a function's image when a service or a job is created and image_digests has no entry for it. Cloud Build rolls later images out, so this only matters at creation."
  type        = string
  default     = "bootstrap"

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag))
    error_message = "image_tag must be a valid Docker tag."
  }
}

variable "image_digests" {
  description = "Optional digests per function (inbound, status, ingest, fanout, sender, api, events, migrate, lifecycle) that take precedence over image_tag: { sender = \"sha256:…\" }."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for d in values(var.image_digests) : can(regex("^sha256:[a-f0-9]{64}$", d))])
    error_message = "Every digest must look like sha256:<64 hex digits>."
  }

  validation {
    condition     = alltrue([for f in keys(var.image_digests) : contains(["inbound", "status", "ingest", "fanout", "sender", "api", "events", "migrate", "lifecycle"], f)])
    error_message = "image_digests keys must be function names: inbound, status, ingest, fanout, sender, api, events, migrate, lifecycle."
  }
}

# ---------------------------------------------------------------- network

variable "run_subnet_cidr" {
  description = "Subnet that Cloud Run instances take addresses from (Direct VPC egress). Each instance uses one address, and rollouts briefly need about twice the summed max instances."
  type        = string
  default     = "10.8.0.0/24"

  validation {
    condition     = can(cidrhost(var.run_subnet_cidr, 0)) && tonumber(split("/", var.run_subnet_cidr)[1]) <= 26
    error_message = "run_subnet_cidr must be a CIDR block of /26 or larger."
  }
}

variable "private_services_prefix_length" {
  description = "Size of the range reserved for private services access (Cloud SQL and Memorystore private IPs)."
  type        = number
  default     = 16

  validation {
    condition     = var.private_services_prefix_length >= 8 && var.private_services_prefix_length <= 24
    error_message = "private_services_prefix_length must be between 8 and 24."
  }
}

# ---------------------------------------------------------------- database

variable "database_version" {
  description = "Cloud SQL PostgreSQL major version. Raising it on an existing instance upgrades it in place (a few minutes of downtime; take a backup first); lowering it is impossible."
  type        = string
  default     = "POSTGRES_18"

  validation {
    condition     = can(regex("^POSTGRES_[0-9]+$", var.database_version))
    error_message = "database_version must be a Cloud SQL PostgreSQL version such as POSTGRES_18."
  }
}

variable "database_tier" {
  description = "Cloud SQL machine tier (Enterprise edition), e.g. db-custom-2-7680 (2 vCPU, 7.5 GB)."
  type        = string
  default     = "db-custom-2-7680"
}

variable "database_availability_type" {
  description = "REGIONAL (standby in a second zone, automatic failover) or ZONAL."
  type        = string
  default     = "REGIONAL"

  validation {
    condition     = contains(["REGIONAL", "ZONAL"], var.database_availability_type)
    error_message = "database_availability_type must be REGIONAL or ZONAL."
  }
}

variable "database_disk_size_gb" {
  description = "Initial SSD size; the disk grows automatically."
  type        = number
  default     = 20

  validation {
    condition     = var.database_disk_size_gb >= 10
    error_message = "database_disk_size_gb must be at least 10."
  }
}

variable "database_max_connections" {
  description = "PostgreSQL max_connections. Must cover the summed pool size x max instances of every service, the largest service's share again (rollouts) and a reserve; checked at plan time, see docs/deploy.md, Sizing."
  type        = number
  default     = 350

  validation {
    condition     = var.database_max_connections >= 50 && var.database_max_connections <= 4000
    error_message = "database_max_connections must be between 50 and 4000."
  }
}

variable "database_connection_reserve" {
  description = "Connections kept free for Cloud SQL's own use, superuser sessions and operators' psql."
  type        = number
  default     = 25
}

variable "database_backup_count" {
  description = "Daily backups kept."
  type        = number
  default     = 14

  validation {
    condition     = var.database_backup_count >= 1 && var.database_backup_count <= 365
    error_message = "database_backup_count must be between 1 and 365."
  }
}

variable "database_log_retention_days" {
  description = "Days of write-ahead log kept for point-in-time recovery (1-7 on Enterprise edition)."
  type        = number
  default     = 7

  validation {
    condition     = var.database_log_retention_days >= 1 && var.database_log_retention_days <= 7
    error_message = "database_log_retention_days must be between 1 and 7."
  }
}

# ---------------------------------------------------------------- redis

variable "redis_tier" {
  description = "STANDARD_HA (replica with automatic failover) or BASIC. The sender refuses to send while Redis is unreachable, so an outage pauses sending."
  type        = string
  default     = "STANDARD_HA"

  validation {
    condition     = contains(["STANDARD_HA", "BASIC"], var.redis_tier)
    error_message = "redis_tier must be STANDARD_HA or BASIC."
  }
}

variable "redis_memory_size_gb" {
  description = "Memorystore capacity; rate-limit state is a few keys per campaign and sender."
  type        = number
  default     = 1
}

variable "redis_version" {
  description = "Memorystore Redis version."
  type        = string
  default     = "REDIS_7_2"
}

# ---------------------------------------------------------------- application

variable "twilio_whatsapp_from" {
  description = "TWILIO_WHATSAPP_FROM: the WhatsApp sender, e.g. whatsapp:+14155238886."
  type        = string

  validation {
    condition     = can(regex("^whatsapp:\\+[1-9][0-9]{6,14}$", var.twilio_whatsapp_from))
    error_message = "twilio_whatsapp_from must look like whatsapp:+14155238886."
  }
}

variable "default_region" {
  description = "DEFAULT_REGION: ISO 3166 country used to read national phone numbers."
  type        = string
  default     = "US"

  validation {
    condition     = can(regex("^[A-Z]{2}$", var.default_region))
    error_message = "default_region must be a two-letter upper-case country code."
  }
}

variable "default_timezone" {
  description = "DEFAULT_TIMEZONE: IANA zone for quiet hours of users without a timezone attribute."
  type        = string
  default     = "UTC"
}

variable "rust_log" {
  description = "RUST_LOG for every function."
  type        = string
  default     = "info"
}

variable "function_env" {
  description = "Extra plain environment variables per function, e.g. { sender = { MAX_ATTEMPTS = \"8\" }, inbound = { CONSENT_OPT_OUT_KEYWORDS = \"STOP,BAJA\" } }."
  type        = map(map(string))
  default     = {}

  validation {
    condition     = alltrue([for f in keys(var.function_env) : contains(["inbound", "status", "ingest", "fanout", "sender", "api", "events"], f)])
    error_message = "function_env keys must be function names: inbound, status, ingest, fanout, sender, api, events."
  }
}

variable "inbound_public_base_url" {
  description = "PUBLIC_BASE_URL of inbound when Twilio calls it through a custom domain; defaults to the service's deterministic run.app URL."
  type        = string
  default     = null

  validation {
    condition     = var.inbound_public_base_url == null || can(regex("^https://[^/?#]+$", var.inbound_public_base_url))
    error_message = "inbound_public_base_url must be https://host with no path or trailing slash."
  }
}

variable "status_public_base_url" {
  description = "PUBLIC_BASE_URL of status (and of the sender's StatusCallback) when Twilio calls it through a custom domain; defaults to the service's deterministic run.app URL."
  type        = string
  default     = null

  validation {
    condition     = var.status_public_base_url == null || can(regex("^https://[^/?#]+$", var.status_public_base_url))
    error_message = "status_public_base_url must be https://host with no path or trailing slash."
  }
}

variable "secrets_rollout" {
  description = "Any string; changing it rolls a new revision of every service so that all instances re-read their secrets (after a token rotation)."
  type        = string
  default     = ""
}

# ---------------------------------------------------------------- access and sizing

variable "api_invoker_members" {
  description = "Principals allowed to call the /v1 API (the api service, and the events service's /v1/events) through Cloud Run IAM (e.g. group:operators@example.com, serviceAccount:…). Each caller also needs an API key."
  type        = list(string)
  default     = []
}

variable "api_ingress" {
  description = "Network ingress of the api and events services. INGRESS_TRAFFIC_ALL lets callers reach them with an identity token from anywhere; INGRESS_TRAFFIC_INTERNAL_ONLY limits them to the VPC."
  type        = string
  default     = "INGRESS_TRAFFIC_ALL"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.api_ingress)
    error_message = "api_ingress must be a Cloud Run v2 ingress value."
  }
}

variable "service_overrides" {
  description = "Per-function changes to the default sizing in services.tf (only the attributes given change): { sender = { max_instances = 20, db_pool = 6 } }."
  type = map(object({
    min_instances   = optional(number)
    max_instances   = optional(number)
    concurrency     = optional(number)
    cpu             = optional(string)
    memory          = optional(string)
    timeout_seconds = optional(number)
    db_pool         = optional(number)
  }))
  default = {}

  validation {
    condition     = alltrue([for f in keys(var.service_overrides) : contains(["inbound", "status", "ingest", "fanout", "sender", "api", "events"], f)])
    error_message = "service_overrides keys must be function names: inbound, status, ingest, fanout, sender, api, events."
  }
}

variable "migrate_db_pool" {
  description = "DATABASE_MAX_CONNECTIONS of the migration job."
  type        = number
  default     = 2
}

variable "lifecycle_db_pool" {
  description = "DATABASE_MAX_CONNECTIONS of the data-lifecycle job."
  type        = number
  default     = 2
}

variable "lifecycle_memory" {
  description = "Memory of the data-lifecycle job. The job writes a month's gzip'd archive to a scratch file before uploading it, and a Cloud Run job's files are kept in memory: this must exceed the largest month's archive object (docs/capacity.md estimates it). Over 4Gi needs lifecycle_cpu 2, over 8Gi 4."
  type        = string
  default     = "2Gi"
}

variable "lifecycle_cpu" {
  description = "vCPUs of the data-lifecycle job (gzip is the job's CPU work)."
  type        = string
  default     = "1"
}

variable "lifecycle_timeout_seconds" {
  description = "Task timeout of the data-lifecycle job: long enough to export the largest month of webhook_events to the archive bucket."
  type        = number
  default     = 3600

  validation {
    condition     = var.lifecycle_timeout_seconds >= 60 && var.lifecycle_timeout_seconds <= 86400
    error_message = "lifecycle_timeout_seconds must be between 60 and 86400."
  }
}

# ---------------------------------------------------------------- triggers

variable "fanout_schedule" {
  description = "Cron schedule (UTC) of the fan-out tick."
  type        = string
  default     = "* * * * *"
}

variable "lifecycle_schedule" {
  description = "Cron schedule (UTC) of the data-lifecycle job."
  type        = string
  default     = "15 3 * * *"
}

variable "import_retention_days" {
  description = "Days an uploaded import file is kept in the bucket before it is deleted."
  type        = number
  default     = 30

  validation {
    condition     = var.import_retention_days >= 1
    error_message = "import_retention_days must be at least 1."
  }
}

# ---------------------------------------------------------------- data lifecycle

variable "retention_months" {
  description = "Months each append-only table keeps in the database before the lifecycle job archives a month to the archive bucket and drops its partition (RETAIN_<TABLE>_MONTHS). A table left out keeps the job's default: { webhook_events = 6, decisions = 13, events = 25 }."
  type        = map(number)
  default     = {}

  validation {
    condition     = alltrue([for t in keys(var.retention_months) : contains(["webhook_events", "decisions", "events"], t)])
    error_message = "retention_months keys must be webhook_events, decisions or events."
  }

  validation {
    condition     = alltrue([for m in values(var.retention_months) : m >= 1 && floor(m) == m])
    error_message = "retention_months values must be whole numbers of months, at least 1."
  }
}

variable "partitions_ahead_months" {
  description = "PARTITIONS_AHEAD_MONTHS: monthly partitions the lifecycle job keeps created ahead of the current month; null keeps the job's default (3)."
  type        = number
  default     = null

  validation {
    condition     = var.partitions_ahead_months == null || try(var.partitions_ahead_months >= 1 && var.partitions_ahead_months <= 24 && floor(var.partitions_ahead_months) == var.partitions_ahead_months, false)
    error_message = "partitions_ahead_months must be a whole number between 1 and 24."
  }
}

variable "archive_delete_after_days" {
  description = "Age in days at which an archive object is deleted (default 2555, 7 years). Objects move to Coldline at 90 days and to Archive at 365; deleting one earlier than 730 days pays Archive's minimum storage duration anyway."
  type        = number
  default     = 2555

  validation {
    condition     = var.archive_delete_after_days >= 1 && floor(var.archive_delete_after_days) == var.archive_delete_after_days
    error_message = "archive_delete_after_days must be a whole number of days, at least 1."
  }
}
