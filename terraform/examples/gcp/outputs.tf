output "api_url" {
  description = "Run API: POST <api_url>/v1/sagas/{name}/runs, with a Google ID token of one of api_invokers (unless public_api)."
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

output "service_accounts" {
  description = "Service accounts: one per function, and the tasks, scheduler and push accounts whose tokens the worker accepts (each on its own routes)."
  value       = module.relay.service_accounts
}

output "relay_gcs_bucket" {
  description = "Bucket of large step outputs."
  value       = module.relay.relay_gcs_bucket
}

output "pubsub_topics" {
  description = "Pub/Sub topic of every manifest topic: publish events here with attribute relay_topic."
  value       = module.relay.pubsub_topics
}
