# One service account per role, each with only what its calls need (issue 10, finding 9):
#
# - api / worker (one per deployed function): Firestore on Relay's database only (an IAM
#   condition on the database's resource name), metrics and logs on the project; enqueuer
#   on the queues and actAs on the *tasks* account (only if it enqueues steps); object admin
#   on the I/O bucket (only if it reads RELAY_GCS_BUCKET);
# - tasks (RELAY_TASKS_SERVICE_ACCOUNT): the identity of Cloud Tasks step deliveries. The
#   worker accepts its token on /v1/steps only, so a function that can mint tasks (the api
#   has to: starting a run enqueues its first step) reaches nothing else with it;
# - scheduler (RELAY_SCHEDULER_SERVICE_ACCOUNT): Cloud Scheduler's jobs (schedules and the
#   sweeper). No function may act as it;
# - push (RELAY_PUSH_SERVICE_ACCOUNT): Pub/Sub push deliveries to /v1/events. Only Pub/Sub's
#   service agent may mint its tokens;
# - operators (RELAY_OPERATOR_EMAILS, var.operators): people or CI accounts allowed to call
#   /v1/runs/{id}/retry and /cancel; none by default (the worker then refuses them).
#
# Each of the three delivery accounts may invoke the worker and nothing else.

locals {
  enqueuers    = { for name, f in local.functions : name => f if contains(f.env.gcp, "RELAY_TASKS_QUEUE") }
  bucket_users = { for name, f in local.functions : name => f if contains(f.env.gcp, "RELAY_GCS_BUCKET") }

  # Project-wide roles hold no data: they write metrics and logs only. Firestore access is
  # the conditional grant below.
  function_project_roles = ["roles/monitoring.metricWriter", "roles/logging.logWriter"]

  # Firestore checks IAM conditions against the database's resource name; document paths
  # extend it with "/documents/...". Equality or a "/"-terminated prefix, so a database
  # whose id merely starts with ours ("relay" vs "relay-other") does not match.
  firestore_resource_name = "projects/${var.project}/databases/${google_firestore_database.relay.name}"

  # The worker-side principals by route, each an account of its own.
  delivery_accounts = {
    tasks     = "Cloud Tasks step deliveries to /v1/steps (RELAY_TASKS_SERVICE_ACCOUNT)"
    scheduler = "Cloud Scheduler calls to /v1/schedules/{name} and /v1/sweep (RELAY_SCHEDULER_SERVICE_ACCOUNT)"
    push      = "Pub/Sub push deliveries to /v1/events (RELAY_PUSH_SERVICE_ACCOUNT)"
  }

  operator_emails = [for member in var.operators : split(":", member)[1]]
}

resource "google_service_account" "function" {
  for_each = local.functions

  project      = var.project
  account_id   = "${var.name_prefix}-${each.key}"
  display_name = "Relay ${each.key} function"
  description  = "Runs the ${each.key} function: ${each.value.description}"
}

resource "google_service_account" "delivery" {
  for_each   = local.delivery_accounts
  depends_on = [google_project_service.api]

  project      = var.project
  account_id   = "${var.name_prefix}-${each.key}"
  display_name = "Relay ${each.key} deliveries"
  description  = "Signs the OIDC tokens of ${each.value}; may invoke the worker and nothing else"
}

resource "google_project_iam_member" "function" {
  for_each = {
    for pair in setproduct(keys(local.functions), local.function_project_roles) :
    "${pair[0]}/${pair[1]}" => { function = pair[0], role = pair[1] }
  }

  project = var.project
  role    = each.value.role
  member  = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

# Read and write documents of Relay's database only: the project may hold other databases.
resource "google_project_iam_member" "firestore" {
  for_each = local.functions

  project = var.project
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.function[each.key].email}"

  condition {
    title       = "relay-firestore-database-only"
    description = "Only the Firestore database of this Relay deployment"
    expression  = "resource.name == \"${local.firestore_resource_name}\" || resource.name.startsWith(\"${local.firestore_resource_name}/\")"
  }
}

# A task carries an OIDC token of the tasks account, so whoever creates it needs actAs on
# that account (iam.serviceAccounts.actAs): granted on this one account only, never on the
# scheduler or push accounts, never on the project.
resource "google_service_account_iam_member" "enqueuer_act_as_tasks" {
  for_each = local.enqueuers

  service_account_id = google_service_account.delivery["tasks"].name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.function[each.key].email}"
}

# Pub/Sub's service agent mints the push subscriptions' tokens as the push account.
resource "google_service_account_iam_member" "pubsub_token_creator" {
  count = local.has_topics ? 1 : 0

  service_account_id = google_service_account.delivery["push"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}
