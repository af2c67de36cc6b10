# The public HTTP API: an API Gateway HTTP API (payload format 2.0, which Mangum reads)
# with exactly the manifest routes of the public function(s), nothing else. Steps, events
# and schedules reach the worker directly, never over HTTP.

resource "aws_apigatewayv2_api" "public" {
  count = length(local.public_functions) > 0 ? 1 : 0

  name          = "${var.name_prefix}-api"
  description   = "Relay public run API: start, read and list runs"
  protocol_type = "HTTP"
  tags          = var.tags
}

resource "aws_apigatewayv2_integration" "public" {
  for_each = local.public_functions

  api_id                 = aws_apigatewayv2_api.public[0].id
  integration_type       = "AWS_PROXY"
  integration_method     = "POST"
  integration_uri        = aws_lambda_function.this[each.key].invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = min(30000, each.value.timeout_seconds * 1000)
}

resource "aws_apigatewayv2_route" "public" {
  #checkov:skip=CKV_AWS_309:These are the public, unauthenticated start/read/list routes the manifest marks public (DESIGN.md contract: POST /v1/sagas/{name}/runs, GET /v1/runs, /healthz); put your own authorizer in front if your runs must not be public.
  for_each = local.api_routes

  api_id             = aws_apigatewayv2_api.public[0].id
  route_key          = each.key
  authorization_type = "NONE"
  target             = "integrations/${aws_apigatewayv2_integration.public[each.value].id}"
}

resource "aws_cloudwatch_log_group" "api_access" {
  #checkov:skip=CKV_AWS_158:Log groups are encrypted by CloudWatch Logs by default; a customer-managed KMS key costs $1 a month at rest, and this deployment costs nothing but storage at rest.
  #checkov:skip=CKV_AWS_338:Retention is the user's choice (var.log_retention_days, 30 days by default) to keep log storage, the only cost at rest, small; raise it where a year of logs is required.
  count = length(local.public_functions) > 0 ? 1 : 0

  name              = "/aws/apigateway/${var.name_prefix}-api"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_apigatewayv2_stage" "public" {
  count = length(local.public_functions) > 0 ? 1 : 0

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
  for_each = local.public_functions

  statement_id  = "api-gateway"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this[each.key].function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.public[0].execution_arn}/*/*"
}
