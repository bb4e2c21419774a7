variable "project_id" {
  description = "Project that holds the service."
  type        = string
}

variable "region" {
  description = "Region of the service."
  type        = string
}

variable "name" {
  description = "Cloud Run service name. Its deterministic URL is https://NAME-PROJECT_NUMBER.REGION.run.app."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,48}[a-z0-9]$", var.name))
    error_message = "name must be a lowercase DNS label of at most 50 characters."
  }
}

variable "description" {
  description = "Human-readable description of the service."
  type        = string
  default     = null
}

variable "service_account_id" {
  description = "account_id of the service's own runtime service account; defaults to \"<name>-run\"."
  type        = string
  default     = null

  validation {
    condition     = var.service_account_id == null || can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.service_account_id))
    error_message = "service_account_id must be 6-30 characters: lowercase letters, digits and hyphens."
  }
}

variable "image" {
  description = "Container image used when the service is created. Later rollouts change the image outside Terraform (Cloud Build), so changes here are ignored once the service exists."
  type        = string
}

variable "env" {
  description = "Plain environment variables."
  type        = map(string)
  default     = {}
}

variable "secret_env" {
  description = "Environment variables read from Secret Manager: variable name => secret id (in this project). The service account gets secretAccessor on exactly these secrets; the latest version is read when an instance starts."
  type        = map(string)
  default     = {}
}

variable "min_instances" {
  description = "Instances kept warm."
  type        = number
  default     = 0

  validation {
    condition     = var.min_instances >= 0
    error_message = "min_instances must be zero or more."
  }
}

variable "max_instances" {
  description = "Upper bound on instances; together with the database pool size it bounds the connections this service can open."
  type        = number

  validation {
    condition     = var.max_instances >= 1
    error_message = "max_instances must be at least 1."
  }
}

variable "concurrency" {
  description = "Requests served at once by one instance."
  type        = number

  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000
    error_message = "concurrency must be between 1 and 1000."
  }
}

variable "cpu" {
  description = "vCPU limit per instance, e.g. \"1\" or \"2\"."
  type        = string
  default     = "1"
}

variable "memory" {
  description = "Memory limit per instance, e.g. \"512Mi\" or \"1Gi\"."
  type        = string
  default     = "512Mi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.memory))
    error_message = "memory must look like 512Mi or 1Gi."
  }
}

variable "timeout_seconds" {
  description = "Request timeout."
  type        = number
  default     = 60

  validation {
    condition     = var.timeout_seconds >= 1 && var.timeout_seconds <= 3600
    error_message = "timeout_seconds must be between 1 and 3600."
  }
}

variable "ingress" {
  description = "Who may reach the service at the network level."
  type        = string
  default     = "INGRESS_TRAFFIC_INTERNAL_ONLY"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.ingress)
    error_message = "ingress must be INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  }
}

variable "network" {
  description = "Name of the VPC network for Direct VPC egress."
  type        = string
}

variable "subnetwork" {
  description = "Name of the subnetwork the instances take their addresses from (Direct VPC egress)."
  type        = string
}

variable "vpc_egress" {
  description = "PRIVATE_RANGES_ONLY sends only private destinations (Cloud SQL, Redis) through the VPC; the rest, such as the Twilio API, leaves directly."
  type        = string
  default     = "PRIVATE_RANGES_ONLY"

  validation {
    condition     = contains(["PRIVATE_RANGES_ONLY", "ALL_TRAFFIC"], var.vpc_egress)
    error_message = "vpc_egress must be PRIVATE_RANGES_ONLY or ALL_TRAFFIC."
  }
}

variable "public" {
  description = "Grant roles/run.invoker to allUsers. Only for endpoints whose callers cannot present a Google identity token and that authenticate requests themselves."
  type        = bool
  default     = false
}

variable "invoker_members" {
  description = "Principals given roles/run.invoker, keyed by a fixed name (the keys must be known at plan time): { scheduler = \"serviceAccount:...\" }."
  type        = map(string)
  default     = {}
}

variable "startup_probe_path" {
  description = "HTTP path that must answer 2xx before an instance gets traffic."
  type        = string
  default     = "/readyz"
}

variable "liveness_probe_path" {
  description = "HTTP path checked periodically; failures restart the instance. Should not depend on other systems."
  type        = string
  default     = "/healthz"
}

variable "template_annotations" {
  description = "Annotations on the revision template. Changing one creates a new revision (used to make every instance re-read its secrets)."
  type        = map(string)
  default     = {}
}

variable "deletion_protection" {
  description = "Refuse to destroy the service from Terraform."
  type        = bool
  default     = true
}
