output "expressions" {
  description = "Schedule name => EventBridge Scheduler expression, cron(minutes hours day-of-month month day-of-week year)."
  value       = local.expressions
}

output "detail_type_filters" {
  description = "Topic pattern => the EventBridge content filter on detail-type: {operator = \"wildcard\" | \"prefix\", value}."
  value       = local.detail_type_filters
}
