output "api_url" {
  description = "Base URL of the public run API: POST {api_url}/v1/sagas/{name}/runs, GET {api_url}/v1/runs/{run_id}."
  value       = module.relay.api_url
}

output "function_names" {
  description = "Lambda function name of every deployed function, by manifest function name."
  value       = module.relay.function_names
}

output "relay_sqs_queue_url" {
  description = "The step queue."
  value       = module.relay.relay_sqs_queue_url
}

output "dead_letter_queue_urls" {
  description = "Dead-letter queues to inspect when the dead-letter alarms fire."
  value       = module.relay.dead_letter_queue_urls
}

output "relay_dynamodb_table" {
  description = "The state table."
  value       = module.relay.relay_dynamodb_table
}

output "relay_s3_bucket" {
  description = "The I/O bucket of large step outputs."
  value       = module.relay.relay_s3_bucket
}
