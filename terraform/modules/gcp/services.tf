# The Google APIs the deployment uses. Destroying the module leaves them enabled
# (disable_on_destroy = false): other things in the project may use them too.

locals {
  services = toset(var.enable_apis ? [
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",
    "cloudtasks.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "storage.googleapis.com",
  ] : [])
}

resource "google_project_service" "api" {
  for_each = local.services

  project            = var.project
  service            = each.value
  disable_on_destroy = false
}
