variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "us-east-1"
}

variable "manifest_path" {
  description = "The bundle manifest: the output of `relay manifest`."
  type        = string
  default     = "manifest.json"
}

variable "package_path" {
  description = "The Lambda zip built by `relay package --target aws --out .` (named after its architecture and Python)."
  type        = string
  default     = "relay-aws-x86_64-py3.12.zip"
}

variable "name_prefix" {
  description = "Prefix of every resource name."
  type        = string
  default     = "relay"
}

variable "architecture" {
  description = "Lambda architecture (x86_64 or arm64): the `--arch` `relay package --target aws` built the zip for."
  type        = string
  default     = "x86_64"
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log groups, in days."
  type        = number
  default     = 30
}

variable "alarm_sns_topic_arn" {
  description = "SNS topic the alarms notify (failed and compensated runs, function errors, dead letters); null: no notifications."
  type        = string
  default     = null
}

variable "environment" {
  description = "Optional settings for the functions that read them, e.g. { RELAY_LOG_LEVEL = \"DEBUG\" }."
  type        = map(string)
  default     = {}
}

variable "reserve_concurrency" {
  description = "Reserve each function's manifest max_instances as Lambda reserved concurrency; false for accounts with a low concurrency quota."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Deletion protection of the DynamoDB state table (set false before `terraform destroy`)."
  type        = bool
  default     = true
}

variable "public_api" {
  description = "Serve the run API with no authorizer (anyone may call it). Off by default; needs api_auth other than \"platform\"."
  type        = bool
  default     = false
}

variable "jwt_issuer" {
  description = "Issuer of a JWT authorizer for the run API (with jwt_audience); null: AWS_IAM (SigV4)."
  type        = string
  default     = null
}

variable "jwt_audience" {
  description = "Audiences the JWT authorizer accepts."
  type        = list(string)
  default     = []
}

variable "api_auth" {
  description = "RELAY_API_AUTH of the api function: platform (the authorizer checked the caller), api_key, jwt, api_key,jwt, or public."
  type        = string
  default     = "platform"
}

variable "platform_grants" {
  description = "RELAY_PLATFORM_GRANTS: what a caller the authorizer admitted may do (\"saga:start,read;saga2:read\", \"*\" for every saga)."
  type        = string
  default     = "*:start,read"
}

variable "event_sources" {
  description = "EventBridge source names whose events start and resume runs (required when the bundle has event patterns)."
  type        = list(string)
  default     = []
}

variable "event_publishers" {
  description = "IAM role or user ARNs allowed to put events on Relay's bus (required when the bundle has event patterns)."
  type        = list(string)
  default     = []
}
