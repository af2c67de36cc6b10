# Relay on Google Cloud, driven by the bundle manifest (docs/manifest.md): every function,
# queue, topic and schedule below comes from `relay manifest`, so a saga added in Python
# needs no hand-written infrastructure and nothing here can drift from the code.

data "google_project" "this" {
  project_id = var.project
}

locals {
  manifest = jsondecode(file(var.manifest_path))

  # One Cloud Run function per manifest function that the default layout deploys on GCP
  # (api and worker; "relay" and "pubsub" are alternatives with deploy = false).
  functions = { for f in local.manifest.functions : f.name => f if f.deploy && f.gcp != null }

  # The worker serves /v1/steps, /v1/events, /v1/schedules and /v1/sweep. The api serves
  # the run API (manifest "public": the caller-facing function); who may call it is
  # var.api_invokers, plus everyone only when var.public_api says so (functions.tf).
  worker        = one([for name, f in local.functions : name if contains(f.route_groups, "worker")])
  api_functions = toset([for name, f in local.functions : name if f.public])

  queues    = { for q in local.manifest.queues : q.name => q }
  topics    = toset(local.manifest.topics)
  schedules = { for s in local.manifest.schedules : s.name => s }
  sweeper   = local.manifest.sweeper

  # Sagas whose queue is not in RELAY_TASKS_QUEUES use RELAY_TASKS_QUEUE.
  default_queue = contains(keys(local.queues), "relay-steps") ? "relay-steps" : sort(keys(local.queues))[0]

  function_names = { for name, f in local.functions : name => "${var.name_prefix}-${name}" }

  # Cloud Run's deterministic URL (https://SERVICE-PROJECT_NUMBER.REGION.run.app): known
  # before the worker exists, so the worker's own environment, the queue's task URL and the
  # token audience can name it without a dependency cycle.
  worker_url = "https://${local.function_names[local.worker]}-${data.google_project.this.number}.${var.region}.run.app"

  # The Pub/Sub service agent mints push tokens and moves undeliverable messages to the
  # dead-letter topic.
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  labels = merge({ app = "relay", managed_by = "terraform" }, var.labels)
}

# Function source: the archive of `relay package --target gcp`. Its md5 is in the object
# name, so a new package is a new object and every function redeploys from it.
resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_62:access logs of a bucket only Cloud Build reads would cost more than they tell; Cloud Audit Logs record its admin activity
  project                     = var.project
  name                        = "${var.project}-${var.name_prefix}-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
  labels                      = local.labels

  versioning {
    enabled = true
  }

  # Old packages are kept a week after a newer one replaces them, then deleted.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket_object" "package" {
  name         = "relay-gcp-${filemd5(var.package_path)}.zip"
  bucket       = google_storage_bucket.source.name
  source       = var.package_path
  content_type = "application/zip"
}
