# The run API: an API Gateway HTTP API (payload format 2.0, which Mangum reads) with
# exactly the manifest routes of the api function(s), nothing else. Steps, events and
# schedules reach the worker directly, never over HTTP.
#
# Every route is behind an authorizer by default (issue 10, finding 1): AWS_IAM (SigV4,
# callers need execute-api:Invoke on api_execution_arn), or a JWT authorizer when
# var.jwt_issuer and var.jwt_audience are set. var.public_api is the explicit opt-in to
# unauthenticated routes.

resource "aws_apigatewayv2_api" "public" {
  count = length(local.api_functions) > 0 ? 1 : 0

  name          = "${var.name_prefix}-api"
  description   = "Relay run API: start, read and list runs"
  protocol_type = "HTTP"
  tags          = var.tags
}

resource "aws_apigatewayv2_integration" "public" {
  for_each = local.api_functions

  api_id                 = aws_apigatewayv2_api.public[0].id
  integration_type       = "AWS_PROXY"
  integration_method     = "POST"
  integration_uri        = aws_lambda_function.this[each.key].invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = min(30000, each.value.timeout_seconds * 1000)
}

resource "aws_apigatewayv2_authorizer" "jwt" {
  count = local.api_authorization == "JWT" && length(local.api_functions) > 0 ? 1 : 0

  api_id           = aws_apigatewayv2_api.public[0].id
  name             = "${var.name_prefix}-jwt"
  authorizer_type  = "JWT"
  identity_sources = ["$request.header.Authorization"]

  jwt_configuration {
    issuer   = var.jwt_issuer
    audience = var.jwt_audience
  }
}

resource "aws_apigatewayv2_route" "public" {
  for_each = local.api_routes

  api_id             = aws_apigatewayv2_api.public[0].id
  route_key          = each.key
  authorization_type = local.api_authorization
  authorizer_id      = local.api_authorization == "JWT" ? aws_apigatewayv2_authorizer.jwt[0].id : null
  target             = "integrations/${aws_apigatewayv2_integration.public[each.value].id}"

  lifecycle {
    precondition {
      condition     = (var.jwt_issuer == null) == (length(var.jwt_audience) == 0)
      error_message = "Set both jwt_issuer and jwt_audience for a JWT authorizer, or neither (AWS_IAM)."
    }
    precondition {
      condition     = !var.public_api || var.api_auth != "platform"
      error_message = "public_api = true lets anyone call the run API with no authorizer, so api_auth = \"platform\" would trust every caller: set api_auth to \"api_key\", \"jwt\" or \"api_key,jwt\" (or \"public\" to mean it)."
    }
  }
}

resource "aws_cloudwatch_log_group" "api_access" {
  #checkov:skip=CKV_AWS_158:Log groups are encrypted by CloudWatch Logs by default; a customer-managed KMS key costs $1 a month at rest, and this deployment costs nothing but storage at rest.
  #checkov:skip=CKV_AWS_338:Retention is the user's choice (var.log_retention_days, 30 days by default) to keep log storage, the only cost at rest, small; raise it where a year of logs is required.
  count = length(local.api_functions) > 0 ? 1 : 0

  name              = "/aws/apigateway/${var.name_prefix}-api"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_apigatewayv2_stage" "public" {
  count = length(local.api_functions) > 0 ? 1 : 0

  api_id      = aws_apigatewayv2_api.public[0].id
  name        = "$default"
  auto_deploy = true

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access[0].arn
    format = jsonencode({
      requestId          = "$context.requestId"
      requestTime        = "$context.requestTime"
      ip                 = "$context.identity.sourceIp"
      httpMethod         = "$context.httpMethod"
      routeKey           = "$context.routeKey"
      status             = "$context.status"
      responseLength     = "$context.responseLength"
      integrationLatency = "$context.integrationLatency"
      integrationError   = "$context.integrationErrorMessage"
    })
  }

  default_route_settings {
    throttling_burst_limit = 500
    throttling_rate_limit  = 1000
  }

  tags = var.tags
}

resource "aws_lambda_permission" "api" {
  for_each = local.api_functions

  statement_id  = "api-gateway"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this[each.key].function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.public[0].execution_arn}/*/*"
}
