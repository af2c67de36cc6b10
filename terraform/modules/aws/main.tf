# Relay on AWS, driven by the bundle manifest (docs/manifest.md): every function, queue,
# event pattern and schedule below comes from `relay manifest`, so nothing drifts from
# the code. tests/terraform/test_aws_consistency.py parses these files and checks them
# against the manifest.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  manifest = jsondecode(file(var.manifest_path))

  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.region

  # One Lambda per manifest function deployed on AWS (api, worker).
  functions = { for f in local.manifest.functions : f.name => f if f.deploy && f.aws != null }

  # The function each trigger delivers to (null: no deployed function takes it).
  sqs_function       = one([for f in local.functions : f.name if contains(f.aws.triggers, "sqs")])
  scheduler_function = one([for f in local.functions : f.name if contains(f.aws.triggers, "scheduler")])
  events_function    = one([for f in local.functions : f.name if contains(f.aws.triggers, "eventbridge")])

  # The HTTP API: every route of the api functions (manifest "public": the caller-facing
  # function), one per method. Who may call them is decided here, not by the manifest:
  # an authorizer unless var.public_api (api.tf).
  api_functions     = { for name, f in local.functions : name => f if f.public }
  api_authorization = var.public_api ? "NONE" : (var.jwt_issuer != null ? "JWT" : "AWS_IAM")
  api_routes = {
    for route in flatten([
      for name, f in local.api_functions : [
        for r in f.routes : [for method in r.methods : { key = "${method} ${r.path}", function = name }]
      ]
    ]) : route.key => route.function
  }

  queues = { for q in local.manifest.queues : q.name => q }
  # The code reads one step queue (RELAY_SQS_QUEUE_URL): the manifest's first.
  step_queue = local.manifest.queues[0].name

  schedules = { for s in local.manifest.schedules : s.name => s }
  # One EventBridge rule per distinct event pattern; several sagas may share one.
  event_patterns = toset([for e in local.manifest.events : e.pattern])
  sagas          = toset([for s in local.manifest.sagas : s.name])

  # Environment. Each function gets exactly the names its manifest env.aws lists, each
  # from one of these sources:
  #   - the manifest's fixed values (config.aws);
  #   - values only the deployment knows (env_deployment);
  #   - optional settings, set only when var.environment gives them (env_optional);
  #   - names the function reads but Terraform must not set (env_not_set).
  env_deployment = {
    RELAY_DATA_DIR           = "/tmp/relay"
    RELAY_DYNAMODB_TABLE     = aws_dynamodb_table.state.name
    RELAY_S3_BUCKET          = aws_s3_bucket.io.id
    RELAY_SCHEDULER_GROUP    = aws_scheduler_schedule_group.delays.name
    RELAY_SCHEDULER_ROLE_ARN = aws_iam_role.delay_scheduler.arn
    RELAY_SQS_QUEUE_URL      = aws_sqs_queue.steps[local.step_queue].url
    # Who may call the run API once the authorizer admitted the caller (functions/http).
    RELAY_API_AUTH        = var.api_auth
    RELAY_PLATFORM_GRANTS = var.platform_grants
  }
  env_optional = [
    "RELAY_FAULTS",
    "RELAY_INLINE_OUTPUT_LIMIT",
    # With api_auth = "jwt" (or "api_key,jwt"): the issuer the app verifies bearer JWTs of.
    "RELAY_JWT_AUDIENCE",
    "RELAY_JWT_GRANTS_CLAIM",
    "RELAY_JWT_ISSUER",
    "RELAY_JWT_JWKS_URL",
    "RELAY_LOG_FORMAT",
    "RELAY_LOG_LEVEL",
    "RELAY_METRICS",
    "RELAY_PIPELINE_MODULES",
    "RELAY_SAGAS",
    "RELAY_SAGA_MODULES",
  ]
  env_not_set = [
    # Reserved by Lambda, which sets them itself (setting one fails the deployment).
    "AWS_ACCESS_KEY_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    # Emulators and local credentials: tests and local runs only.
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
  ]
  env_values = merge(
    local.manifest.config.aws,
    { for name, value in var.environment : name => value if contains(local.env_optional, name) },
    local.env_deployment,
  )
  function_env = {
    for name, f in local.functions : name => {
      for key in f.env.aws : key => local.env_values[key] if contains(keys(local.env_values), key)
    }
  }

  function_names = { for name, f in local.functions : name => "${var.name_prefix}-${name}" }
  alarm_actions  = var.alarm_sns_topic_arn == null ? [] : [var.alarm_sns_topic_arn]
}

module "eventbridge" {
  source         = "./eventbridge"
  schedules      = { for name, s in local.schedules : name => s.cron }
  event_patterns = local.event_patterns
}

# The sweeper's cron, converted by the same rules as the sagas' schedules.
module "sweeper_cron" {
  source    = "./eventbridge"
  schedules = { sweeper = local.manifest.sweeper.cron }
}
