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
