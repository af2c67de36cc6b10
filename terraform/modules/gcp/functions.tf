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
    RELAY_TASKS_SERVICE_ACCOUNT = google_service_account.delivery["tasks"].email
    RELAY_TASKS_AUDIENCE        = local.worker_url
    RELAY_PUBSUB_TOPICS         = jsonencode({ for topic, name in local.subscription_names : name => topic })
    # The worker accepts each delivery account on its own routes only, and operator
    # routes from these emails only (empty: retry and cancel are refused).
    RELAY_SCHEDULER_SERVICE_ACCOUNT = google_service_account.delivery["scheduler"].email
    RELAY_PUSH_SERVICE_ACCOUNT      = google_service_account.delivery["push"].email
    RELAY_OPERATOR_EMAILS           = join(",", local.operator_emails)
    # Who may call the run API once Cloud Run IAM admitted the caller (functions/http).
    RELAY_API_AUTH        = var.api_auth
    RELAY_PLATFORM_GRANTS = var.platform_grants
  }

  # Variables the code reads that a deployment may leave at their defaults (an empty value
  # means "unset" to functions/settings.py); var.environment overrides them.
  optional_env = {
    RELAY_SAGAS               = ""
    RELAY_SAGA_MODULES        = ""
    RELAY_PIPELINE_MODULES    = ""
    RELAY_INLINE_OUTPUT_LIMIT = "65536"
    RELAY_LOG_LEVEL           = "INFO"
    # With api_auth = "jwt" (or "api_key,jwt"): the issuer the app verifies bearer JWTs of.
    RELAY_JWT_ISSUER       = ""
    RELAY_JWT_AUDIENCE     = ""
    RELAY_JWT_JWKS_URL     = ""
    RELAY_JWT_GRANTS_CLAIM = "relay_grants"
  }

  env_values = merge(local.optional_env, var.environment, local.manifest.config.gcp, local.deployment_env)

  # Each function gets exactly the names its code reads (env.gcp in the manifest); a name
  # with no value here fails the plan instead of deploying a function that cannot start.
  function_env = { for name, f in local.functions : name => { for key in f.env.gcp : key => local.env_values[key] } }
}

resource "google_cloudfunctions2_function" "function" {
  #checkov:skip=CKV_GCP_124:the api function (manifest public = true: it serves the run API) takes requests from outside Google Cloud, but Cloud Run IAM admits only var.api_invokers unless var.public_api; the worker uses var.worker_ingress (internal only by default)
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

# The run API is private: Cloud Run admits only callers with run.invoker, each presenting a
# Google-signed ID token (issue 10, finding 1). var.api_invokers names them; the app then
# applies RELAY_API_AUTH / RELAY_PLATFORM_GRANTS to what each may start and read.
resource "google_cloud_run_service_iam_member" "api_invoker" {
  for_each = {
    for pair in setproduct(local.api_functions, var.api_invokers) :
    "${pair[0]}/${pair[1]}" => { function = pair[0], member = pair[1] }
  }

  project  = var.project
  location = var.region
  service  = google_cloudfunctions2_function.function[each.value.function].service_config[0].service
  role     = "roles/run.invoker"
  member   = each.value.member
}

# Public access is an explicit opt-in (var.public_api, off by default): only then does
# allUsers get run.invoker, and the app must not trust the platform for identities
# (the precondition refuses RELAY_API_AUTH = platform with a public service).
resource "google_cloud_run_service_iam_member" "public_invoker" {
  for_each = var.public_api ? local.api_functions : toset([])

  project  = var.project
  location = var.region
  service  = google_cloudfunctions2_function.function[each.key].service_config[0].service
  role     = "roles/run.invoker"
  # Spelled through the variable, like the for_each: the binding exists only when
  # public_api is true, and checkov (which evaluates variables but not for_each) sees
  # allUsers exactly then.
  member = var.public_api ? "allUsers" : null

  lifecycle {
    precondition {
      condition     = var.api_auth != "platform"
      error_message = "public_api = true lets anyone call the run API without a Google identity, so api_auth = \"platform\" would trust every caller: set api_auth to \"api_key\", \"jwt\" or \"api_key,jwt\" (or \"public\" to mean it)."
    }
  }
}

# The worker: the three delivery accounts (each accepted on its own routes only) and the
# operators (retry and cancel), nobody else.
resource "google_cloud_run_service_iam_member" "worker_invoker" {
  for_each = merge(
    { for role, account in google_service_account.delivery : role => "serviceAccount:${account.email}" },
    { for member in var.operators : member => member },
  )

  project  = var.project
  location = var.region
  service  = google_cloudfunctions2_function.function[local.worker].service_config[0].service
  role     = "roles/run.invoker"
  member   = each.value
}
