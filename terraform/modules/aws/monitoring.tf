# Alarms: runs that ended FAILED or COMPENSATED (the relay/runs_finished EMF metric of
# infra/aws/emf.py: namespace "Relay", dimensions saga and status), function errors, and
# any message waiting in a dead-letter queue.

locals {
  failed_run_alarms = {
    for pair in setproduct(local.sagas, toset(["FAILED", "COMPENSATED"])) :
    "${pair[0]}-${lower(pair[1])}" => { saga = pair[0], status = pair[1] }
  }
  dead_letter_queues = merge(
    { for name, q in aws_sqs_queue.dead_letter : name => q.name },
    { async = aws_sqs_queue.async_dlq.name },
  )
}

resource "aws_cloudwatch_metric_alarm" "runs_finished" {
  for_each = local.failed_run_alarms

  alarm_name          = "${var.name_prefix}-runs-${each.key}"
  alarm_description   = "Runs of saga ${each.value.saga} ended ${each.value.status} (Relay EMF metric relay/runs_finished)."
  namespace           = "Relay"
  metric_name         = "relay/runs_finished"
  dimensions          = { saga = each.value.saga, status = each.value.status }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "function_errors" {
  for_each = local.functions

  alarm_name          = "${local.function_names[each.key]}-errors"
  alarm_description   = "The ${each.key} function raised errors (invocations that failed outright)."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.this[each.key].function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  for_each = local.dead_letter_queues

  alarm_name          = "${var.name_prefix}-${each.key}-dead-letters"
  alarm_description   = "Messages wait in dead-letter queue ${each.value}: inspect them, then redrive."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = each.value }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}
