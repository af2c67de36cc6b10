variable "project" {
  description = "Google Cloud project id to deploy into (billing enabled)."
  type        = string
}

variable "region" {
  description = "Region of the functions, queues and scheduler jobs (and of Firestore unless firestore_location is set)."
  type        = string
  default     = "us-central1"
}

variable "manifest_path" {
  description = "The bundle manifest: the output of `relay manifest`."
  type        = string
  default     = "manifest.json"
}

variable "package_path" {
  description = "The source archive built by `relay package --target gcp`."
  type        = string
  default     = "relay-gcp.zip"
}

variable "name_prefix" {
  description = "Prefix of every resource name."
  type        = string
  default     = "relay"
}

variable "alert_notification_channels" {
  description = "Cloud Monitoring notification channels (projects/PROJECT/notificationChannels/ID) for the failed/compensated run alerts."
  type        = list(string)
  default     = []
}

variable "firestore_database" {
  description = "Firestore database id; (default) is the only one with Firestore's free quota."
  type        = string
  default     = "(default)"
}

variable "api_invokers" {
  description = "Who may call the run API (roles/run.invoker on the api function): IAM members such as serviceAccount:backend@PROJECT.iam.gserviceaccount.com or group:team@example.com."
  type        = list(string)
  default     = []
}

variable "public_api" {
  description = "Let anyone on the internet call the run API (allUsers). Off by default; needs api_auth other than \"platform\"."
  type        = bool
  default     = false
}

variable "api_auth" {
  description = "RELAY_API_AUTH of the api function: platform (Cloud Run IAM checked the caller), api_key, jwt, api_key,jwt, or public."
  type        = string
  default     = "platform"
}

variable "platform_grants" {
  description = "RELAY_PLATFORM_GRANTS: what a caller Cloud Run admitted may do (\"saga:start,read;saga2:read\", \"*\" for every saga)."
  type        = string
  default     = "*:start,read"
}

variable "operators" {
  description = "user:EMAIL or serviceAccount:EMAIL members allowed to retry and cancel runs on the worker (none by default)."
  type        = list(string)
  default     = []
}
