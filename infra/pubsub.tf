# Send tasks: fanout publishes one message per message id, Pub/Sub pushes it
# to the sender with an OIDC token. Transient failures are retried with
# backoff (10 s .. 600 s); after 10 deliveries a task goes to the dead-letter
# topic, where it waits in a pull subscription for an operator.

resource "google_pubsub_topic" "send" {
  # checkov:skip=CKV_GCP_83:Send tasks carry message ids only (no phone numbers or text); Google-managed encryption is enough.
  name = "${var.name_prefix}-send"

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic" "send_dead_letter" {
  # checkov:skip=CKV_GCP_83:Send tasks carry message ids only (no phone numbers or text); Google-managed encryption is enough.
  name = "${var.name_prefix}-send-dead-letter"

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_subscription" "send_push" {
  name  = "${var.name_prefix}-send-push"
  topic = google_pubsub_topic.send.id

  # Longer than the sender's request timeout (60 s), so a slow request ends
  # (and is nacked) before Pub/Sub considers it lost and delivers again.
  ack_deadline_seconds       = 90
  message_retention_duration = "604800s" # 7 days

  expiration_policy {
    ttl = "" # never expires
  }

  push_config {
    push_endpoint = "${module.service["sender"].uri}/pubsub/push"

    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = module.service["sender"].uri
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.send_dead_letter.id
    max_delivery_attempts = 10
  }

  depends_on = [google_pubsub_topic_iam_member.dead_letter_publisher]
}

resource "google_pubsub_subscription" "send_dead_letter" {
  name  = "${var.name_prefix}-send-dead-letter"
  topic = google_pubsub_topic.send_dead_letter.id

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s" # 7 days

  expiration_policy {
    ttl = ""
  }
}

# Dead-lettering is done by the Pub/Sub service agent: it must be able to
# publish to the dead-letter topic and to acknowledge on the source
# subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  topic  = google_pubsub_topic.send_dead_letter.name
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  subscription = google_pubsub_subscription.send_push.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# Events: producers publish one event per message to the events topic, and
# Pub/Sub pushes each to the events service with an OIDC token of its own
# push identity (iam.tf). Retries, dead-lettering and the operator's pull
# subscription work as for send tasks above. Nothing in this configuration
# publishes here: grant roles/pubsub.publisher on the topic to the producers.

resource "google_pubsub_topic" "events" {
  # checkov:skip=CKV_GCP_83:Events can carry user identifiers and attributes, the same personal data the database and the import bucket hold under Google-managed encryption; a customer-managed key would add a KMS key to run and rotate for this topic alone.
  name = "${var.name_prefix}-events"

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic" "events_dead_letter" {
  # checkov:skip=CKV_GCP_83:Events can carry user identifiers and attributes, the same personal data the database and the import bucket hold under Google-managed encryption; a customer-managed key would add a KMS key to run and rotate for this topic alone.
  name = "${var.name_prefix}-events-dead-letter"

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_subscription" "events_push" {
  name  = "${var.name_prefix}-events-push"
  topic = google_pubsub_topic.events.id

  # Longer than the events service's request timeout (60 s), so a slow
  # request ends (and is nacked) before Pub/Sub delivers it again.
  ack_deadline_seconds       = 90
  message_retention_duration = "604800s" # 7 days

  expiration_policy {
    ttl = "" # never expires
  }

  push_config {
    push_endpoint = "${module.service["events"].uri}/pubsub/events"

    oidc_token {
      service_account_email = google_service_account.events_push.email
      audience              = module.service["events"].uri
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.events_dead_letter.id
    max_delivery_attempts = 10
  }

  depends_on = [google_pubsub_topic_iam_member.events_dead_letter_publisher]
}

# A topic without a subscription drops what is published to it: this one
# keeps dead-lettered events for an operator.
resource "google_pubsub_subscription" "events_dead_letter" {
  name  = "${var.name_prefix}-events-dead-letter"
  topic = google_pubsub_topic.events_dead_letter.id

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s" # 7 days

  expiration_policy {
    ttl = ""
  }
}

# The Pub/Sub service agent's dead-lettering grants, as for send tasks.
resource "google_pubsub_topic_iam_member" "events_dead_letter_publisher" {
  topic  = google_pubsub_topic.events_dead_letter.name
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "events_dead_letter_subscriber" {
  subscription = google_pubsub_subscription.events_push.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
