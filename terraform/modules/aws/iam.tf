# One role per function, granting only the resources behind the ports it uses: a
# function gets a service's statement only when its manifest env.aws names the variable
# that points it there (RELAY_DYNAMODB_TABLE, RELAY_SQS_QUEUE_URL, RELAY_S3_BUCKET,
# RELAY_SCHEDULER_ROLE_ARN), or the trigger that needs it ("sqs").

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  for_each = local.functions

  name               = "${local.function_names[each.key]}-function"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "function" {
  for_each = local.functions

  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function[each.key].arn}:*"]
  }

  # X-Ray's PutTraceSegments and PutTelemetryRecords support no resource-level
  # permissions: AWS requires "*" (the AWSXRayDaemonWriteAccess managed policy does the same).
  statement {
    sid       = "WriteTraces"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }

  statement {
    sid       = "DeadLetterAsyncInvocations"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.async_dlq.arn]
  }

  dynamic "statement" {
    for_each = contains(each.value.env.aws, "RELAY_DYNAMODB_TABLE") ? [1] : []
    content {
      sid = "StateTable"
      # TransactWriteItems is authorised per item as PutItem / ConditionCheckItem.
      actions = [
        "dynamodb:ConditionCheckItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
      ]
      # The table and its two indexes by name (no "index/*").
      resources = concat(
        [aws_dynamodb_table.state.arn],
        [for index in aws_dynamodb_table.state.global_secondary_index : "${aws_dynamodb_table.state.arn}/index/${index.name}"],
      )
    }
  }

  dynamic "statement" {
    for_each = contains(each.value.env.aws, "RELAY_SQS_QUEUE_URL") ? [1] : []
    content {
      sid = "SendSteps"
      # GetQueueAttributes: the queue's ARN and dead-letter queue for long-delay schedules.
      # (ChangeMessageVisibility, holding back a record that is not due yet, acts on a
      # received message: ConsumeSteps grants it to the consumer only.)
      actions   = ["sqs:GetQueueAttributes", "sqs:SendMessage"]
      resources = [for q in aws_sqs_queue.steps : q.arn]
    }
  }

  dynamic "statement" {
    for_each = contains(each.value.aws.triggers, "sqs") ? [1] : []
    content {
      sid       = "ConsumeSteps"
      actions   = ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"]
      resources = [for q in aws_sqs_queue.steps : q.arn]
    }
  }

  dynamic "statement" {
    for_each = contains(each.value.env.aws, "RELAY_S3_BUCKET") ? [1] : []
    content {
      sid       = "ReadWriteOutputs"
      actions   = ["s3:DeleteObject", "s3:GetObject", "s3:PutObject", "s3:PutObjectTagging"]
      resources = ["${aws_s3_bucket.io.arn}/*"]
    }
  }

  dynamic "statement" {
    for_each = contains(each.value.env.aws, "RELAY_S3_BUCKET") ? [1] : []
    content {
      sid       = "ListOutputs"
      actions   = ["s3:ListBucket"]
      resources = [aws_s3_bucket.io.arn]
    }
  }

  dynamic "statement" {
    for_each = contains(each.value.env.aws, "RELAY_SCHEDULER_ROLE_ARN") ? [1] : []
    content {
      # Long delays: one-time schedules named relay-<hash> in the delay group only
      # (infra/aws/scheduler_delay.py; Scheduler deletes each after it fires).
      sid       = "CreateDelaySchedules"
      actions   = ["scheduler:CreateSchedule"]
      resources = ["arn:${local.partition}:scheduler:${local.region}:${local.account_id}:schedule/${aws_scheduler_schedule_group.delays.name}/relay-*"]
    }
  }

  dynamic "statement" {
    for_each = contains(each.value.env.aws, "RELAY_SCHEDULER_ROLE_ARN") ? [1] : []
    content {
      sid       = "PassDelaySchedulerRole"
      actions   = ["iam:PassRole"]
      resources = [aws_iam_role.delay_scheduler.arn]

      condition {
        test     = "StringEquals"
        variable = "iam:PassedToService"
        values   = ["scheduler.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "function" {
  for_each = local.functions

  name   = "relay"
  role   = aws_iam_role.function[each.key].id
  policy = data.aws_iam_policy_document.function[each.key].json
}

# EventBridge Scheduler assumes these roles, only on behalf of this account's schedules.
data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

# Cron schedules invoke the function with the "scheduler" trigger, and nothing else.
resource "aws_iam_role" "cron_scheduler" {
  name               = "${var.name_prefix}-cron-scheduler"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "cron_scheduler" {
  statement {
    sid       = "InvokeWorker"
    actions   = ["lambda:InvokeFunction"]
    resources = [for name, fn in aws_lambda_function.this : fn.arn if name == local.scheduler_function]
  }

  statement {
    sid       = "DeadLetterUndelivered"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.async_dlq.arn]
  }
}

resource "aws_iam_role_policy" "cron_scheduler" {
  count = local.scheduler_function == null ? 0 : 1

  name   = "relay"
  role   = aws_iam_role.cron_scheduler.id
  policy = data.aws_iam_policy_document.cron_scheduler.json
}

# Long-delay schedules (RELAY_SCHEDULER_ROLE_ARN) send the step message to its queue, or
# to the queue's dead-letter queue when Scheduler cannot deliver it.
resource "aws_iam_role" "delay_scheduler" {
  name               = "${var.name_prefix}-delay-scheduler"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "delay_scheduler" {
  statement {
    sid       = "SendDueSteps"
    actions   = ["sqs:SendMessage"]
    resources = concat([for q in aws_sqs_queue.steps : q.arn], [for q in aws_sqs_queue.dead_letter : q.arn])
  }
}

resource "aws_iam_role_policy" "delay_scheduler" {
  name   = "relay"
  role   = aws_iam_role.delay_scheduler.id
  policy = data.aws_iam_policy_document.delay_scheduler.json
}
