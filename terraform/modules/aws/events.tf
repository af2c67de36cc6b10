# EventBridge: one rule per distinct manifest event pattern. functions/aws.py reads an
# EventBridge event's detail-type as the Relay topic, so each rule filters detail-type
# with the pattern's EventBridge form (./eventbridge: a wildcard or prefix filter that
# matches every topic the pattern matches, possibly more); the engine then applies the
# exact pattern, so a wider match starts nothing it should not.

resource "aws_cloudwatch_event_rule" "topic" {
  for_each = local.events_function == null ? toset([]) : local.event_patterns

  name           = substr("${var.name_prefix}-${replace(replace(each.key, "**", "all"), "*", "any")}", 0, 64)
  description    = "Relay topic pattern ${each.key}"
  event_bus_name = var.event_bus_name
  event_pattern = jsonencode(merge(
    {
      "detail-type" = [{
        (module.eventbridge.detail_type_filters[each.key].operator) = module.eventbridge.detail_type_filters[each.key].value
      }]
    },
    { for key, values in { source = var.event_sources } : key => values if length(values) > 0 },
  ))
  tags = var.tags
}

resource "aws_cloudwatch_event_target" "topic" {
  for_each = aws_cloudwatch_event_rule.topic

  rule           = each.value.name
  event_bus_name = var.event_bus_name
  target_id      = "relay-${local.events_function}"
  arn            = aws_lambda_function.this[local.events_function].arn

  dead_letter_config {
    arn = aws_sqs_queue.async_dlq.arn
  }

  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 10
  }
}

resource "aws_lambda_permission" "events" {
  for_each = aws_cloudwatch_event_rule.topic

  statement_id  = "events-${md5(each.key)}"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this[local.events_function].function_name
  principal     = "events.amazonaws.com"
  source_arn    = each.value.arn
}

# EventBridge delivers to a target's dead-letter queue with the queue's resource policy.
data "aws_iam_policy_document" "async_dlq" {
  statement {
    sid       = "EventRuleDeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.async_dlq.arn]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [for rule in aws_cloudwatch_event_rule.topic : rule.arn]
    }
  }
}

resource "aws_sqs_queue_policy" "async_dlq" {
  count = length(aws_cloudwatch_event_rule.topic) > 0 ? 1 : 0

  queue_url = aws_sqs_queue.async_dlq.id
  policy    = data.aws_iam_policy_document.async_dlq.json
}
