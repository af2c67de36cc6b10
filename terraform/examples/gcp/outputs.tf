output "api_url" {
  description = "Public run API: POST <api_url>/v1/sagas/{name}/runs."
  value       = module.relay.api_url
}

output "worker_url" {
  description = "Worker base URL (Cloud Tasks, Pub/Sub push, Cloud Scheduler); also the OIDC audience."
  value       = module.relay.worker_url
}

output "function_names" {
  description = "Cloud Run function of every deployed manifest function."
  value       = module.relay.function_names
}

output "relay_tasks_queues" {
  description = "Cloud Tasks queue path of every manifest queue."
  value       = module.relay.relay_tasks_queues
}

output "relay_tasks_service_account" {
  description = "The invoker service account whose tokens the worker accepts."
  value       = module.relay.relay_tasks_service_account
}

output "relay_gcs_bucket" {
  description = "Bucket of large step outputs."
  value       = module.relay.relay_gcs_bucket
}

output "pubsub_topics" {
  description = "Pub/Sub topic of every manifest topic: publish events here with attribute relay_topic."
  value       = module.relay.pubsub_topics
}
