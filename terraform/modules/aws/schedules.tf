# EventBridge Scheduler: one recurring schedule per manifest schedule, the manifest's
# sweeper, and the group in which the functions create one-time schedules for long step
# delays.

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

resource "aws_scheduler_schedule" "sweeper" {
  #checkov:skip=CKV_AWS_297:The sweeper's Input holds one number; Scheduler encrypts it with an AWS-owned key, and a customer-managed key costs $1 a month at rest.
  count = local.scheduler_function != null ? 1 : 0

  name        = "${var.name_prefix}-sweeper"
  group_name  = aws_scheduler_schedule_group.cron.name
  description = "Re-drives runs that made no progress for ${local.manifest.sweeper.stale_after_seconds} s (relay manifest sweeper)."

  schedule_expression          = module.sweeper_cron.expressions["sweeper"]
  schedule_expression_timezone = "UTC"

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.this[local.scheduler_function].arn
    role_arn = aws_iam_role.cron_scheduler.arn

    # The shape functions/aws.py's SweepInvocation parses.
    input = jsonencode({
      relay               = "sweep"
      stale_after_seconds = local.manifest.sweeper.stale_after_seconds
    })

    dead_letter_config {
      arn = aws_sqs_queue.async_dlq.arn
    }

    # A missed sweep is made up by the next one a minute later: never pile them up.
    retry_policy {
      maximum_event_age_in_seconds = 60
      maximum_retry_attempts       = 0
    }
  }
}
