output "api_url" {
  description = "Base URL of the run API (POST /v1/sagas/{name}/runs, GET /v1/runs/{run_id}); callers need run.invoker (var.api_invokers) unless var.public_api."
  value       = one([for name in local.api_functions : google_cloudfunctions2_function.function[name].service_config[0].uri])
}

output "worker_url" {
  description = "Base URL of the worker (Cloud Tasks, Pub/Sub push and Cloud Scheduler deliveries); also the OIDC audience."
  value       = local.worker_url
}

output "function_urls" {
  description = "URL of every deployed function, by manifest function name."
  value       = { for name, function in google_cloudfunctions2_function.function : name => function.service_config[0].uri }
}

output "function_names" {
  description = "Cloud Run function name of every deployed function, by manifest function name."
  value       = { for name, function in google_cloudfunctions2_function.function : name => function.name }
}

output "function_environment" {
  description = "The environment each function gets, by manifest function name (the names its code reads)."
  value       = local.function_env
}

output "google_cloud_project" {
  description = "The project (GOOGLE_CLOUD_PROJECT)."
  value       = var.project
}

output "relay_firestore_database" {
  description = "Firestore database id."
  value       = google_firestore_database.relay.name
}

output "relay_firestore_collection" {
  description = "Collection of the run documents."
  value       = local.firestore_collection
}

output "relay_gcs_bucket" {
  description = "Bucket of large step outputs."
  value       = google_storage_bucket.io.name
}

output "relay_tasks_queue" {
  description = "Path of the default Cloud Tasks queue."
  value       = google_cloud_tasks_queue.queue[local.default_queue].id
}

output "relay_tasks_queues" {
  description = "Path of every Cloud Tasks queue, by manifest queue name."
  value       = { for name, queue in google_cloud_tasks_queue.queue : name => queue.id }
}

output "relay_worker_url" {
  description = "Where Cloud Tasks delivers step messages."
  value       = "${local.worker_url}/v1/steps"
}

output "relay_tasks_service_account" {
  description = "The account of Cloud Tasks step deliveries (accepted by the worker on /v1/steps only)."
  value       = google_service_account.delivery["tasks"].email
}

output "relay_scheduler_service_account" {
  description = "The account of Cloud Scheduler calls (accepted by the worker on /v1/schedules/{name} and /v1/sweep only)."
  value       = google_service_account.delivery["scheduler"].email
}

output "relay_push_service_account" {
  description = "The account of Pub/Sub push deliveries (accepted by the worker on /v1/events only)."
  value       = google_service_account.delivery["push"].email
}

output "relay_tasks_audience" {
  description = "The OIDC audience of Cloud Tasks, Pub/Sub push and Cloud Scheduler tokens."
  value       = local.worker_url
}

output "relay_pubsub_topics" {
  description = "Relay topic of each push subscription, by subscription id."
  value       = { for topic, name in local.subscription_names : name => topic }
}

output "pubsub_topics" {
  description = "Pub/Sub topic id of every manifest topic (publish events here, with attribute relay_topic)."
  value       = { for topic, resource in google_pubsub_topic.event : topic => resource.id }
}

output "scheduler_jobs" {
  description = "Cloud Scheduler job of every manifest schedule, and of the sweeper."
  value       = merge({ for name, job in google_cloud_scheduler_job.schedule : name => job.id }, { sweeper = google_cloud_scheduler_job.sweeper.id })
}

output "service_accounts" {
  description = "Service account email of every function and of the tasks, scheduler and push delivery accounts."
  value       = merge({ for name, account in google_service_account.function : name => account.email }, { for role, account in google_service_account.delivery : role => account.email })
}
