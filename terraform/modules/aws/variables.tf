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
  description = "Optional settings the code reads (RELAY_SAGAS, RELAY_SAGA_MODULES, RELAY_PIPELINE_MODULES, RELAY_INLINE_OUTPUT_LIMIT, RELAY_LOG_LEVEL, RELAY_LOG_FORMAT, RELAY_METRICS), each given only to the functions whose manifest env.aws lists it."
  type        = map(string)
  default     = {}
}

variable "output_retention_days" {
  description = "Days the I/O bucket keeps a finished run's outputs and input after the run ended; match the state store's run retention (DynamoDBStateStore retention_seconds, 30 days by default)."
  type        = number
  default     = 30
}

variable "output_max_age_days" {
  description = "Days after its last write any object in the I/O bucket is deleted, finished or not: a backstop for runs that never end. Keep it above the longest run."
  type        = number
  default     = 365

  validation {
    condition     = var.output_max_age_days > 0
    error_message = "output_max_age_days must be positive."
  }
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
  description = "An existing EventBridge bus whose events start and resume runs (detail-type = the Relay topic); null: the module creates <name_prefix>-events, on which only event_publishers may put events. On a bus of yours, restricting PutEvents is up to you."
  type        = string
  default     = null
}

variable "event_sources" {
  description = "EventBridge `source` values the event rules accept, as exact names (required when the manifest has event patterns): events claiming any other source match no rule."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for source in var.event_sources : can(regex("^[A-Za-z0-9][A-Za-z0-9._/:-]{0,255}$", source))])
    error_message = "Each of event_sources must be an exact source name (letters, digits, '.', '_', '/', ':', '-'); wildcards, prefixes and empty names are not accepted."
  }
}

variable "event_publishers" {
  description = "IAM principal ARNs (roles or users, in this account or another) allowed to put events on the bus the module creates; everyone else is denied events:PutEvents on it. Required when the manifest has event patterns and event_bus_name is null."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.event_publishers : can(regex("^arn:aws[a-z-]*:(iam|sts)::[0-9]{12}:[A-Za-z-]+/\\S+$", arn))])
    error_message = "Each of event_publishers must be an IAM principal ARN with an account id, such as arn:aws:iam::123456789012:role/payments (no bare \"*\")."
  }
}

variable "public_api" {
  description = "Serve the run API's routes with no authorizer (authorization NONE): anyone on the internet may call them. Off by default; with it on, api_auth must not be \"platform\"."
  type        = bool
  default     = false
}

variable "jwt_issuer" {
  description = "Issuer URL of a JWT authorizer for the run API (Cognito, Auth0, any OIDC issuer), with jwt_audience; null: routes use AWS_IAM (SigV4, execute-api:Invoke on the api_execution_arn output)."
  type        = string
  default     = null
}

variable "jwt_audience" {
  description = "Audiences (client ids) the JWT authorizer accepts; set with jwt_issuer."
  type        = list(string)
  default     = []
}

variable "api_auth" {
  description = "RELAY_API_AUTH of the api function: \"platform\" (the authorizer already checked the caller; grants from platform_grants), a comma list of \"api_key\" and \"jwt\", or \"public\" (no check in the app)."
  type        = string
  default     = "platform"

  validation {
    condition = contains(["platform", "public"], var.api_auth) || alltrue([
      for mode in split(",", var.api_auth) : contains(["api_key", "jwt"], trimspace(mode))
    ])
    error_message = "The api_auth variable must be \"platform\", \"public\", or a comma list of \"api_key\" and \"jwt\"."
  }
}

variable "platform_grants" {
  description = "RELAY_PLATFORM_GRANTS of the api function: what a caller the authorizer admitted may do, as \"saga:start,read;saga2:read\" (\"*\" for every saga)."
  type        = string
  default     = "*:start,read"
}

variable "tags" {
  description = "Tags on every resource that takes them."
  type        = map(string)
  default     = {}
}
