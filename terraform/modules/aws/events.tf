# EventBridge: one rule per distinct manifest event pattern. functions/aws.py reads an
# EventBridge event's detail-type as the Relay topic, so each rule filters detail-type
# with the pattern's EventBridge form (./eventbridge: a wildcard or prefix filter that
# matches every topic the pattern matches, possibly more); the engine then applies the
# exact pattern, so a wider match starts nothing it should not.
#
# An event resumes wait_for_event steps ("payment confirmed"), so who can send one matters
# (issue 10, finding 4). Two layers, both on by default:
#
# - named sources: every rule also requires `source` to be exactly one of var.event_sources
#   (no wildcard, no prefix; the plan fails while the manifest has event patterns and the
#   list is empty), so an event claiming any other source matches no rule;
# - a dedicated bus (<prefix>-events) whose resource policy denies events:PutEvents to every
#   principal but var.event_publishers, so nobody else can put an event on it, whatever
#   source it claims. var.event_bus_name selects an existing bus instead (its policy is then
#   yours; on the default bus, only AWS services can send "aws.*" sources).

locals {
  has_event_rules = local.events_function != null && length(local.event_patterns) > 0
  owns_event_bus  = local.has_event_rules && var.event_bus_name == null
  event_bus_name  = var.event_bus_name != null ? var.event_bus_name : "${var.name_prefix}-events"
  # Built from known parts rather than read from the bus, so the plan shows the policy.
  event_bus_arn = "arn:${local.partition}:events:${local.region}:${local.account_id}:event-bus/${local.event_bus_name}"
}

resource "aws_cloudwatch_event_bus" "relay" {
  count = local.owns_event_bus ? 1 : 0

  name = local.event_bus_name
  tags = var.tags
}

data "aws_iam_policy_document" "event_bus" {
  count = local.owns_event_bus ? 1 : 0

  # An explicit deny binds principals of this account too, whose own IAM policies may
  # allow events:PutEvents on "*".
  statement {
    sid       = "OnlyNamedPublishers"
    effect    = "Deny"
    actions   = ["events:PutEvents"]
    resources = [local.event_bus_arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "ArnNotLike"
      variable = "aws:PrincipalArn"
      values   = var.event_publishers
    }
  }

  # Publishers in other accounts need the bus to allow them as well.
  statement {
    sid       = "NamedPublishers"
    actions   = ["events:PutEvents"]
    resources = [local.event_bus_arn]

    principals {
      type        = "AWS"
      identifiers = var.event_publishers
    }
  }
}

resource "aws_cloudwatch_event_bus_policy" "relay" {
  count = local.owns_event_bus ? 1 : 0

  event_bus_name = aws_cloudwatch_event_bus.relay[0].name
  policy         = data.aws_iam_policy_document.event_bus[0].json

  lifecycle {
    precondition {
      condition     = length(var.event_publishers) > 0
      error_message = "The manifest has event patterns: set event_publishers to the IAM role or user ARNs allowed to put Relay events on the ${local.event_bus_name} bus (or event_bus_name to a bus you manage)."
    }
  }
}

resource "aws_cloudwatch_event_rule" "topic" {
  for_each = local.events_function == null ? toset([]) : local.event_patterns

  name           = substr("${var.name_prefix}-${replace(replace(each.key, "**", "all"), "*", "any")}", 0, 64)
  description    = "Relay topic pattern ${each.key}"
  event_bus_name = local.owns_event_bus ? aws_cloudwatch_event_bus.relay[0].name : local.event_bus_name
  event_pattern = jsonencode({
    "detail-type" = [{
      (module.eventbridge.detail_type_filters[each.key].operator) = module.eventbridge.detail_type_filters[each.key].value
    }]
    # Exact values (a JSON array of strings is an exact match in EventBridge patterns).
    source = var.event_sources
  })
  tags = var.tags

  lifecycle {
    precondition {
      condition     = length(var.event_sources) > 0
      error_message = "The manifest has event patterns: set event_sources to the EventBridge `source` values Relay accepts (exact names, e.g. [\"com.example.payments\"]); a rule without them would match events from any source."
    }
  }
}

resource "aws_cloudwatch_event_target" "topic" {
  for_each = aws_cloudwatch_event_rule.topic

  rule           = each.value.name
  event_bus_name = each.value.event_bus_name
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
