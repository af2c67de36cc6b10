output "expressions" {
  description = "Schedule name => EventBridge Scheduler expression, cron(minutes hours day-of-month month day-of-week year)."
  value       = local.expressions
}
