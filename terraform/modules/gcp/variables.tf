variable "project" {
  description = "Google Cloud project id everything is created in (GOOGLE_CLOUD_PROJECT of the functions)."
  type        = string
}

variable "region" {
  description = "Region of the functions, Cloud Tasks queues and Cloud Scheduler jobs."
  type        = string
}

variable "manifest_path" {
  description = "Path of the version-2 bundle manifest printed by `relay manifest` (docs/manifest.md)."
  type        = string
}

variable "package_path" {
  description = "Path of the source archive built by `relay package --target gcp`."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of every resource name (functions, queues, topics, jobs, service accounts)."
  type        = string
  default     = "relay"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,14}$", var.name_prefix))
    error_message = "name_prefix must be 2-15 characters: a lowercase letter, then lowercase letters, digits or hyphens (service account ids are limited to 30 characters)."
  }
}

variable "alert_notification_channels" {
  description = "Cloud Monitoring notification channels the run alerts notify, as projects/PROJECT/notificationChannels/ID (none: the alerts only open incidents)."
  type        = list(string)
  default     = []
}

variable "firestore_database" {
  description = "Firestore database id (RELAY_FIRESTORE_DATABASE). Only the (default) database has Firestore's free quota."
  type        = string
  default     = "(default)"
}

variable "firestore_location" {
  description = "Firestore location (a region or a multi-region such as nam5); null: the region."
  type        = string
  default     = null
}

variable "firestore_delete_protection" {
  description = "Refuse to delete the Firestore database (run history) while true."
  type        = bool
  default     = true
}

variable "firestore_indexes_path" {
  description = "Path of the Firestore indexes file (Firebase CLI format); null: infra/gcp/firestore.indexes.json of this repository."
  type        = string
  default     = null
}

variable "io_retention_days" {
  description = "Days the I/O bucket keeps a finished run's outputs and input after the run ended; match the state store's run retention (FirestoreStateStore retention_seconds, 30 days by default)."
  type        = number
  default     = 30
}

variable "io_max_age_days" {
  description = "Days after its creation any object in the I/O bucket is deleted, finished or not: a backstop for runs that never end. Keep it above the longest run."
  type        = number
  default     = 365

  validation {
    condition     = var.io_max_age_days > 0
    error_message = "io_max_age_days must be positive."
  }
}

variable "worker_ingress" {
  description = "Ingress of the worker. ALLOW_INTERNAL_ONLY still admits Cloud Tasks, Pub/Sub push and Cloud Scheduler of the same project; ALLOW_ALL lets var.operators call /v1/runs/{id}/retry from outside (every call still needs an OIDC token)."
  type        = string
  default     = "ALLOW_INTERNAL_ONLY"

  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.worker_ingress)
    error_message = "worker_ingress must be ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }
}

variable "pubsub_max_delivery_attempts" {
  description = "Deliveries of an event before Pub/Sub moves it to the dead-letter topic (5-100)."
  type        = number
  default     = 10
}

variable "environment" {
  description = "Optional values of variables the functions read (RELAY_LOG_LEVEL, RELAY_SAGAS, ...). Only names a function's env.gcp lists are passed to it."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Labels added to the resources that take labels."
  type        = map(string)
  default     = {}
}

variable "enable_apis" {
  description = "Enable the Google APIs the deployment uses (Cloud Functions, Cloud Run, Cloud Build, Firestore, Cloud Tasks, Pub/Sub, Cloud Scheduler, ...)."
  type        = bool
  default     = true
}

variable "api_invokers" {
  description = "IAM members allowed to call the run API (roles/run.invoker on the api function), e.g. \"serviceAccount:backend@P.iam.gserviceaccount.com\", \"group:team@example.com\". Empty: nobody until you grant it."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for member in var.api_invokers : can(regex("^(user|serviceAccount|group|domain|principal|principalSet):\\S+$", member))])
    error_message = "The api_invokers variable takes IAM members such as user:EMAIL, serviceAccount:EMAIL or group:EMAIL; for public access set public_api = true instead of listing allUsers."
  }
}

variable "public_api" {
  description = "Let anyone call the run API (allUsers gets roles/run.invoker on the api function). Off by default; with it on, api_auth must not be \"platform\"."
  type        = bool
  default     = false
}

variable "api_auth" {
  description = "RELAY_API_AUTH of the api function: \"platform\" (Cloud Run IAM already checked the caller; grants from platform_grants), a comma list of \"api_key\" and \"jwt\", or \"public\" (no check in the app)."
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
  description = "RELAY_PLATFORM_GRANTS of the api function: what a caller Cloud Run admitted may do, as \"saga:start,read;saga2:read\" (\"*\" for every saga)."
  type        = string
  default     = "*:start,read"
}

variable "operators" {
  description = "Members allowed to call the worker's operator routes (/v1/runs/{id}/retry and /cancel), as user:EMAIL or serviceAccount:EMAIL: they get roles/run.invoker on the worker and their emails become RELAY_OPERATOR_EMAILS. Empty: the worker refuses operator calls."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for member in var.operators : can(regex("^(user|serviceAccount):[^@\\s:]+@[^@\\s]+$", member))])
    error_message = "The operators variable takes user:EMAIL or serviceAccount:EMAIL members (the worker checks the email of each caller's token, so groups cannot be used)."
  }
}
