# EventBridge Scheduler: one recurring schedule per manifest schedule, and the group in
# which the functions create one-time schedules for long step delays.
#
# The manifest's sweeper is not scheduled here: functions/aws.py serves no sweep
# invocation (its scheduler shape starts a named schedule's run, and /v1/sweep is not
# among the HTTP routes it serves on Lambda).

resource "aws_scheduler_schedule_group" "cron" {
  name = "${var.name_prefix}-cron"
  tags = var.tags
}

resource "aws_scheduler_schedule_group" "delays" {
  name = "${var.name_prefix}-delays"
  tags = var.tags
}

resource "aws_scheduler_schedule" "saga" {
  #checkov:skip=CKV_AWS_297:The schedule's Input names the schedule and its time only; Scheduler encrypts it with an AWS-owned key, and a customer-managed key costs $1 a month at rest.
  for_each = { for name, s in local.schedules : name => s if local.scheduler_function != null }

  name        = "${var.name_prefix}-${each.key}"
  group_name  = aws_scheduler_schedule_group.cron.name
  description = each.value.description != "" ? each.value.description : "Starts saga ${each.value.saga} (relay manifest schedule ${each.key}, cron ${each.value.cron})."

  schedule_expression          = module.eventbridge.expressions[each.key]
  schedule_expression_timezone = each.value.timezone

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.this[local.scheduler_function].arn
    role_arn = aws_iam_role.cron_scheduler.arn

    # The shape functions/aws.py's SchedulerInvocation parses; the run id derives from
    # the schedule and this time, so Scheduler's retries start one run. jsonencode writes
    # "<" and ">" as \u003c and \u003e, which would hide the context attribute from
    # Scheduler's substitution: put them back.
    input = replace(replace(jsonencode({
      relay          = "schedule"
      schedule       = each.key
      scheduled_time = "<aws.scheduler.scheduled-time>"
    }), "\\u003c", "<"), "\\u003e", ">")

    dead_letter_config {
      arn = aws_sqs_queue.async_dlq.arn
    }

    retry_policy {
      maximum_event_age_in_seconds = 3600
      maximum_retry_attempts       = 10
    }
  }
}
