# Events: one Pub/Sub topic per manifest topic (the first segment of the event patterns;
# "relay-all" for "*"/"**"), pushed to the worker's /v1/events with the push account's OIDC
# token. Publishers set the message attribute relay_topic (or topic) to the full Relay
# topic, e.g. orders.eu.created; a message without one is read as the manifest topic of its
# subscription (RELAY_PUBSUB_TOPICS). Undeliverable messages go to the dead-letter topic.

locals {
  topic_names        = { for topic in local.topics : topic => "${var.name_prefix}-${topic}" }
  subscription_names = { for topic in local.topics : topic => "${var.name_prefix}-${topic}-worker" }
  has_topics         = length(local.topics) > 0
}

resource "google_pubsub_topic" "event" {
  #checkov:skip=CKV_GCP_83:events are encrypted at rest with Google-managed keys; a Cloud KMS key would cost money at rest, which this deployment avoids (add kms_key_name if you need CMEK)
  for_each   = local.topic_names
  depends_on = [google_project_service.api]

  project = var.project
  name    = each.value
  labels  = local.labels
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption, as for the event topics (no Cloud KMS key to pay for at rest)
  count = local.has_topics ? 1 : 0

  project                    = var.project
  name                       = "${var.name_prefix}-events-dead-letter"
  labels                     = local.labels
  message_retention_duration = "604800s"
}

# Messages published to a topic without subscriptions are lost: this pull subscription
# keeps dead-lettered events for 7 days for inspection and replay.
resource "google_pubsub_subscription" "dead_letter" {
  count = local.has_topics ? 1 : 0

  project                    = var.project
  name                       = "${var.name_prefix}-events-dead-letter"
  topic                      = google_pubsub_topic.dead_letter[0].id
  labels                     = local.labels
  message_retention_duration = "604800s"
  ack_deadline_seconds       = 60

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "event" {
  for_each = local.subscription_names

  project              = var.project
  name                 = each.value
  topic                = google_pubsub_topic.event[each.key].id
  labels               = local.labels
  ack_deadline_seconds = max(10, min(600, local.functions[local.worker].timeout_seconds))

  push_config {
    push_endpoint = "${local.worker_url}/v1/events"

    oidc_token {
      service_account_email = google_service_account.delivery["push"].email
      audience              = local.worker_url
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[0].id
    max_delivery_attempts = var.pubsub_max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }
}

# Dead-lettering is done by the Pub/Sub service agent: it must publish to the dead-letter
# topic and acknowledge (subscriber) on the subscription it moves messages from.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  count = local.has_topics ? 1 : 0

  project = var.project
  topic   = google_pubsub_topic.dead_letter[0].name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each = local.subscription_names

  project      = var.project
  subscription = google_pubsub_subscription.event[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}
