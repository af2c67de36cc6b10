# One service account per role, each with only what its calls need:
# - api / worker (one per deployed function): Firestore, metrics and logs on the project;
#   enqueuer on the queues and actAs on the invoker (only if it enqueues steps); object
#   admin on the I/O bucket (only if it reads RELAY_GCS_BUCKET);
# - invoker (RELAY_TASKS_SERVICE_ACCOUNT): the identity of Cloud Tasks, Pub/Sub push and
#   Cloud Scheduler tokens; it may invoke the worker and nothing else.

locals {
  enqueuers    = { for name, f in local.functions : name => f if contains(f.env.gcp, "RELAY_TASKS_QUEUE") }
  bucket_users = { for name, f in local.functions : name => f if contains(f.env.gcp, "RELAY_GCS_BUCKET") }

  function_project_roles = ["roles/datastore.user", "roles/monitoring.metricWriter", "roles/logging.logWriter"]
}

resource "google_service_account" "function" {
  for_each = local.functions

  project      = var.project
  account_id   = "${var.name_prefix}-${each.key}"
  display_name = "Relay ${each.key} function"
  description  = "Runs the ${each.key} function: ${each.value.description}"
}

resource "google_service_account" "invoker" {
  depends_on = [google_project_service.api]

  project      = var.project
  account_id   = "${var.name_prefix}-invoker"
  display_name = "Relay invoker"
  description  = "Signs the OIDC tokens of Cloud Tasks, Pub/Sub push and Cloud Scheduler calls to the worker (RELAY_TASKS_SERVICE_ACCOUNT)"
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

# A task carries an OIDC token of the invoker, so whoever creates it needs actAs on that
# account (iam.serviceAccounts.actAs): granted on this one account only, never the project.
resource "google_service_account_iam_member" "enqueuer_act_as_invoker" {
  for_each = local.enqueuers

  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.function[each.key].email}"
}

# Pub/Sub's service agent mints the push subscriptions' tokens as the invoker.
resource "google_service_account_iam_member" "pubsub_token_creator" {
  count = local.has_topics ? 1 : 0

  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}
