# One Cloud Scheduler job per manifest schedule, POSTing to the worker's
# /v1/schedules/<name> with the scheduler account's OIDC token (Content-Type
# application/json: the worker answers 415 to anything else); the run id derives from the schedule
# name and X-CloudScheduler-ScheduleTime, so the scheduler's retries start one run. Plus the
# sweeper, which re-drives runs that stopped making progress.

resource "google_cloud_scheduler_job" "schedule" {
  for_each   = local.schedules
  depends_on = [google_project_service.api]

  project          = var.project
  region           = var.region
  name             = "${var.name_prefix}-${each.key}"
  description      = each.value.description != "" ? each.value.description : "Relay schedule ${each.key}: starts saga ${each.value.saga}"
  schedule         = each.value.cron
  time_zone        = each.value.timezone
  attempt_deadline = "${max(15, min(1800, local.functions[local.worker].timeout_seconds))}s"

  retry_config {
    retry_count          = 3
    min_backoff_duration = "10s"
    max_backoff_duration = "300s"
  }

  http_target {
    http_method = "POST"
    uri         = "${local.worker_url}/v1/schedules/${each.key}"
    body        = base64encode(jsonencode({}))
    headers = {
      "Content-Type" = "application/json"
    }

    oidc_token {
      service_account_email = google_service_account.delivery["scheduler"].email
      audience              = local.worker_url
    }
  }
}

resource "google_cloud_scheduler_job" "sweeper" {
  depends_on = [google_project_service.api]

  project          = var.project
  region           = var.region
  name             = "${var.name_prefix}-sweep"
  description      = "Relay sweeper: re-drives active runs that made no progress for ${local.sweeper.stale_after_seconds} s"
  schedule         = local.sweeper.cron
  time_zone        = "Etc/UTC"
  attempt_deadline = "${max(15, min(1800, local.functions[local.worker].timeout_seconds))}s"

  http_target {
    http_method = "POST"
    uri         = "${local.worker_url}${local.sweeper.path}"
    body        = base64encode(jsonencode({ stale_after_seconds = local.sweeper.stale_after_seconds }))
    headers = {
      "Content-Type" = "application/json"
    }

    oidc_token {
      service_account_email = google_service_account.delivery["scheduler"].email
      audience              = local.worker_url
    }
  }
}
