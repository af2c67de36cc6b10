output "api_url" {
  description = "Base URL of the run API (POST /v1/sagas/{name}/runs, GET /v1/runs, /healthz); null when no function serves it. Calls need SigV4 (AWS_IAM) or a JWT unless public_api."
  value       = length(aws_apigatewayv2_stage.public) > 0 ? aws_apigatewayv2_stage.public[0].invoke_url : null
}

output "api_authorization" {
  description = "How the run API's routes authorize callers: AWS_IAM (default), JWT (jwt_issuer set) or NONE (public_api)."
  value       = local.api_authorization
}

output "api_execution_arn" {
  description = "Execution ARN of the run API: with AWS_IAM, grant callers execute-api:Invoke on \"<this>/*/*\" (or narrower, e.g. \"<this>/*/GET/v1/runs/*\")."
  value       = length(aws_apigatewayv2_api.public) > 0 ? aws_apigatewayv2_api.public[0].execution_arn : null
}

output "event_bus_name" {
  description = "The EventBridge bus Relay's event rules listen on (null when the manifest has no event patterns and no bus was given)."
  value       = local.owns_event_bus ? aws_cloudwatch_event_bus.relay[0].name : var.event_bus_name
}

output "function_names" {
  description = "Manifest function name => Lambda function name."
  value       = { for name, fn in aws_lambda_function.this : name => fn.function_name }
}

output "relay_sqs_queue_url" {
  description = "The step queue's URL (the functions' RELAY_SQS_QUEUE_URL)."
  value       = aws_sqs_queue.steps[local.step_queue].url
}

output "queue_urls" {
  description = "Manifest queue name => SQS queue URL."
  value       = { for name, q in aws_sqs_queue.steps : name => q.url }
}

output "dead_letter_queue_urls" {
  description = "Manifest queue name => its dead-letter queue URL (plus \"async\": failed asynchronous invocations)."
  value       = merge({ for name, q in aws_sqs_queue.dead_letter : name => q.url }, { async = aws_sqs_queue.async_dlq.url })
}

output "relay_dynamodb_table" {
  description = "The state table (the functions' RELAY_DYNAMODB_TABLE)."
  value       = aws_dynamodb_table.state.name
}

output "relay_s3_bucket" {
  description = "The I/O bucket (the functions' RELAY_S3_BUCKET)."
  value       = aws_s3_bucket.io.id
}

output "relay_scheduler_role_arn" {
  description = "Role EventBridge Scheduler assumes for long-delay step schedules."
  value       = aws_iam_role.delay_scheduler.arn
}

output "relay_scheduler_group" {
  description = "Schedule group of the long-delay step schedules."
  value       = aws_scheduler_schedule_group.delays.name
}

output "function_environment" {
  description = "The environment each function gets, by manifest function name (exactly the names of its manifest env.aws that have a value)."
  value       = local.function_env
}
