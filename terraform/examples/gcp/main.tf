provider "google" {
  project = var.project
  region  = var.region
}

module "relay" {
  source = "../../modules/gcp"

  project                     = var.project
  region                      = var.region
  manifest_path               = var.manifest_path
  package_path                = var.package_path
  name_prefix                 = var.name_prefix
  alert_notification_channels = var.alert_notification_channels
  firestore_database          = var.firestore_database
  api_invokers                = var.api_invokers
  public_api                  = var.public_api
  api_auth                    = var.api_auth
  platform_grants             = var.platform_grants
  operators                   = var.operators
}
