provider "aws" {
  region = var.region

  default_tags {
    tags = { "relay:deployment" = var.name_prefix }
  }
}

module "relay" {
  source = "../../modules/aws"

  manifest_path       = var.manifest_path
  package_path        = var.package_path
  name_prefix         = var.name_prefix
  architecture        = var.architecture
  log_retention_days  = var.log_retention_days
  alarm_sns_topic_arn = var.alarm_sns_topic_arn
  environment         = var.environment
  reserve_concurrency = var.reserve_concurrency
  deletion_protection = var.deletion_protection
  public_api          = var.public_api
  jwt_issuer          = var.jwt_issuer
  jwt_audience        = var.jwt_audience
  api_auth            = var.api_auth
  platform_grants     = var.platform_grants
  event_sources       = var.event_sources
  event_publishers    = var.event_publishers
}
