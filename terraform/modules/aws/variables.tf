variable "manifest_path" {
  description = "Path to the bundle manifest (`relay manifest > manifest.json`, version 2, docs/manifest.md)."
  type        = string
}

variable "package_path" {
  description = "Path to the Lambda zip built by `relay package --target aws`."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of every resource name (functions, queues, table, roles, schedules)."
  type        = string
  default     = "relay"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.name_prefix))
    error_message = "name_prefix must be 1-20 characters of lower-case letters, digits and '-', starting with a letter (it prefixes the S3 bucket name too)."
  }
}

variable "architecture" {
  description = "Lambda architecture; it must match the platform `relay package --target aws` installed wheels for."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be arm64 or x86_64."
  }
}

variable "log_retention_days" {
  description = "Retention of the functions' and the API's CloudWatch log groups, in days."
  type        = number
  default     = 30
}

variable "alarm_sns_topic_arn" {
  description = "SNS topic notified by the alarms (failed and compensated runs, function errors, dead-lettered messages); null: alarms without notifications."
  type        = string
  default     = null
}

variable "environment" {
  description = "Optional settings the code reads (RELAY_SAGAS, RELAY_SAGA_MODULES, RELAY_INLINE_OUTPUT_LIMIT, RELAY_LOG_LEVEL, RELAY_LOG_FORMAT, RELAY_METRICS), each given only to the functions whose manifest env.aws lists it."
  type        = map(string)
  default     = {}
}

variable "output_retention_days" {
  description = "Days large step outputs stay in the I/O bucket (finished runs expire from DynamoDB after 30 days)."
  type        = number
  default     = 30
}

variable "reserve_concurrency" {
  description = "Reserve each function's manifest max_instances as its Lambda reserved concurrency (caps its scaling and keeps a burst from starving the others); false leaves the account's unreserved pool, for accounts with a low concurrency quota."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Protect the DynamoDB state table from deletion (set false before `terraform destroy`)."
  type        = bool
  default     = true
}

variable "event_bus_name" {
  description = "EventBridge bus whose events start and resume runs (detail-type = the Relay topic)."
  type        = string
  default     = "default"
}

variable "event_sources" {
  description = "EventBridge `source` values accepted by the event rules; empty: any source."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags on every resource that takes them."
  type        = map(string)
  default     = {}
}
