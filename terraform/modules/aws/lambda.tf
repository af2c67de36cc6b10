# One Lambda per deployed manifest function, all from the one zip of `relay package
# --target aws`; functions.aws.handler routes each invocation by its event shape.

resource "aws_cloudwatch_log_group" "function" {
  #checkov:skip=CKV_AWS_158:Log groups are encrypted by CloudWatch Logs by default; a customer-managed KMS key costs $1 a month at rest, and this deployment costs nothing but storage at rest.
  #checkov:skip=CKV_AWS_338:Retention is the user's choice (var.log_retention_days, 30 days by default) to keep log storage, the only cost at rest, small; raise it where a year of logs is required.
  for_each = local.functions

  name              = "/aws/lambda/${local.function_names[each.key]}"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_117:No VPC: the function only calls DynamoDB, SQS, S3 and EventBridge Scheduler over their public HTTPS endpoints with IAM; a VPC would add NAT gateways or interface endpoints, a cost at rest.
  #checkov:skip=CKV_AWS_173:Environment variables hold resource names and ARNs, no secrets; Lambda encrypts them at rest with its AWS-managed key, and a customer-managed key costs $1 a month at rest.
  #checkov:skip=CKV_AWS_272:The zip is built locally by `relay package --target aws` (reproducible, same inputs same hash); there is no AWS Signer profile in this deployment to sign it.
  for_each = local.functions

  function_name = local.function_names[each.key]
  description   = each.value.description
  role          = aws_iam_role.function[each.key].arn
  handler       = each.value.aws.handler
  runtime       = "python3.12"
  architectures = [var.architecture]

  filename         = var.package_path
  source_code_hash = filebase64sha256(var.package_path)

  memory_size                    = each.value.memory_mb
  timeout                        = each.value.timeout_seconds
  reserved_concurrent_executions = var.reserve_concurrency ? each.value.max_instances : -1

  environment {
    variables = local.function_env[each.key]
  }

  tracing_config {
    mode = "Active"
  }

  # Asynchronous invocations (EventBridge Scheduler, EventBridge rules) that fail after
  # Lambda's retries land here instead of being dropped.
  dead_letter_config {
    target_arn = aws_sqs_queue.async_dlq.arn
  }

  tags = var.tags

  depends_on = [aws_cloudwatch_log_group.function, aws_iam_role_policy.function]

  lifecycle {
    precondition {
      condition     = each.value.timeout_seconds <= 900
      error_message = "Function ${each.key}: timeout_seconds ${each.value.timeout_seconds} exceeds Lambda's 900 s limit."
    }
    precondition {
      condition     = !each.value.public || each.value.timeout_seconds <= 30
      error_message = "Function ${each.key} serves the public HTTP API: API Gateway cuts requests at 30 s, so its timeout_seconds must be <= 30."
    }
  }
}

# Dead-letter queue of the functions' asynchronous invocations.
resource "aws_sqs_queue" "async_dlq" {
  name                      = "${var.name_prefix}-async-dlq"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
  tags                      = var.tags
}
