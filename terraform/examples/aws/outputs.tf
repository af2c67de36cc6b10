output "api_url" {
  description = "Base URL of the run API: POST {api_url}/v1/sagas/{name}/runs, GET {api_url}/v1/runs/{run_id} (SigV4 or a JWT unless public_api)."
  value       = module.relay.api_url
}

output "api_execution_arn" {
  description = "Grant callers execute-api:Invoke on \"<this>/*/*\" (AWS_IAM authorization)."
  value       = module.relay.api_execution_arn
}

output "event_bus_name" {
  description = "The EventBridge bus to put Relay events on (source: one of event_sources; detail-type: the Relay topic)."
  value       = module.relay.event_bus_name
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
