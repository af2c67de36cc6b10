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
