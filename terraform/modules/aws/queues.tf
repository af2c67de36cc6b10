# One SQS queue per manifest queue, each with its dead-letter queue, delivered to the
# function with the "sqs" trigger through an event source mapping that reads partial
# batch responses (functions/aws.py reports only the records SQS must deliver again).

resource "aws_sqs_queue" "dead_letter" {
  for_each = local.queues

  name                      = "${var.name_prefix}-${each.key}-dlq"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
  tags                      = var.tags
}

resource "aws_sqs_queue" "steps" {
  for_each = local.queues

  name                       = "${var.name_prefix}-${each.key}"
  visibility_timeout_seconds = each.value.visibility_timeout_seconds
  message_retention_seconds  = 1209600
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter[each.key].arn
    maxReceiveCount     = each.value.dlq_max_receive_count
  })
  tags = var.tags
}

resource "aws_sqs_queue_redrive_allow_policy" "dead_letter" {
  for_each = local.queues

  queue_url = aws_sqs_queue.dead_letter[each.key].id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.steps[each.key].arn]
  })
}

resource "aws_lambda_event_source_mapping" "steps" {
  for_each = { for name, q in local.queues : name => q if local.sqs_function != null }

  event_source_arn        = aws_sqs_queue.steps[each.key].arn
  function_name           = aws_lambda_function.this[local.sqs_function].arn
  batch_size              = 10
  function_response_types = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = max(2, min(1000, each.value.max_concurrent_dispatches, local.functions[local.sqs_function].max_instances))
  }

  lifecycle {
    precondition {
      condition     = each.value.visibility_timeout_seconds >= local.functions[local.sqs_function].timeout_seconds
      error_message = "Queue ${each.key}: visibility_timeout_seconds must be at least the ${local.sqs_function} function's timeout (an event source mapping requires it)."
    }
  }
}
