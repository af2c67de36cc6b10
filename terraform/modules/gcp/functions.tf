locals {
  # Values only the deployment knows, by the variable name functions/settings.py reads.
  deployment_env = {
    GOOGLE_CLOUD_PROJECT        = var.project
    GOOGLE_CLOUD_REGION         = var.region
    RELAY_FIRESTORE_DATABASE    = google_firestore_database.relay.name
    RELAY_FIRESTORE_COLLECTION  = local.firestore_collection
    RELAY_GCS_BUCKET            = google_storage_bucket.io.name
    RELAY_TASKS_QUEUE           = google_cloud_tasks_queue.queue[local.default_queue].id
    RELAY_TASKS_QUEUES          = jsonencode({ for name, queue in google_cloud_tasks_queue.queue : name => queue.id })
    RELAY_WORKER_URL            = "${local.worker_url}/v1/steps"
    RELAY_TASKS_SERVICE_ACCOUNT = google_service_account.invoker.email
    RELAY_TASKS_AUDIENCE        = local.worker_url
    RELAY_PUBSUB_TOPICS         = jsonencode({ for topic, name in local.subscription_names : name => topic })
  }

  # Variables the code reads that a deployment may leave at their defaults (an empty value
  # means "unset" to functions/settings.py); var.environment overrides them.
  optional_env = {
    RELAY_SAGAS               = ""
    RELAY_SAGA_MODULES        = ""
    RELAY_INLINE_OUTPUT_LIMIT = "65536"
    RELAY_LOG_LEVEL           = "INFO"
  }

  env_values = merge(local.optional_env, var.environment, local.manifest.config.gcp, local.deployment_env)

  # Each function gets exactly the names its code reads (env.gcp in the manifest); a name
  # with no value here fails the plan instead of deploying a function that cannot start.
  function_env = { for name, f in local.functions : name => { for key in f.env.gcp : key => local.env_values[key] } }
}

resource "google_cloudfunctions2_function" "function" {
  #checkov:skip=CKV_GCP_124:the api function (manifest public = true) is the public run API and must allow all ingress; the worker uses var.worker_ingress (internal only by default)
  for_each   = local.functions
  depends_on = [google_project_service.api]

  project     = var.project
  location    = var.region
  name        = local.function_names[each.key]
  description = each.value.description
  labels      = local.labels

  build_config {
    runtime     = "python312"
    entry_point = each.value.gcp.entry_point

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.package.name
      }
    }
  }

  service_config {
    available_memory                 = "${each.value.memory_mb}Mi"
    available_cpu                    = each.value.concurrency > 1 ? "1" : null
    timeout_seconds                  = each.value.timeout_seconds
    min_instance_count               = each.value.min_instances
    max_instance_count               = each.value.max_instances
    max_instance_request_concurrency = each.value.concurrency
    ingress_settings                 = each.value.public ? "ALLOW_ALL" : var.worker_ingress
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.function[each.key].email
    environment_variables            = local.function_env[each.key]
  }
}

# The public API: anyone may call it (it starts and reads runs; put your own auth in front
# if you need it). Only functions the manifest marks public get allUsers.
resource "google_cloud_run_service_iam_member" "public_invoker" {
  #checkov:skip=CKV_GCP_102:the api function is the public run API by design (manifest public = true); every other function is private
  for_each = local.public

  project  = var.project
  location = var.region
  service  = google_cloudfunctions2_function.function[each.key].service_config[0].service
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# The worker: only the invoker account (Cloud Tasks, Pub/Sub push, Cloud Scheduler tokens).
resource "google_cloud_run_service_iam_member" "worker_invoker" {
  project  = var.project
  location = var.region
  service  = google_cloudfunctions2_function.function[local.worker].service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.invoker.email}"
}
