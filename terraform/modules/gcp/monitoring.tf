# Alerts on runs that ended FAILED or COMPENSATED: the runs_finished counter of
# core/ports/metrics.py (custom.googleapis.com/relay/runs_finished, labels saga and status),
# written by infra/gcp/monitoring.py as a CUMULATIVE INT64 series per generic_task.

locals {
  runs_finished_metric = "custom.googleapis.com/relay/runs_finished"
  alerted_run_statuses = toset(["FAILED", "COMPENSATED"])
}

# Declared here so the alert policies can be created before the first run writes a point
# (Cloud Monitoring refuses a policy on a metric type it has never seen).
resource "google_monitoring_metric_descriptor" "runs_finished" {
  depends_on = [google_project_service.api]

  project      = var.project
  type         = local.runs_finished_metric
  metric_kind  = "CUMULATIVE"
  value_type   = "INT64"
  unit         = "1"
  display_name = "Relay runs finished"
  description  = "Runs that reached a terminal status."

  labels {
    key         = "saga"
    value_type  = "STRING"
    description = "The saga of the run."
  }

  labels {
    key         = "status"
    value_type  = "STRING"
    description = "The terminal run status."
  }
}

resource "google_monitoring_alert_policy" "runs" {
  for_each = local.alerted_run_statuses

  project               = var.project
  display_name          = "Relay (${var.name_prefix}): runs ${lower(each.key)}"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "Runs ending ${each.key}"

    condition_threshold {
      filter          = "resource.type = \"generic_task\" AND metric.type = \"${google_monitoring_metric_descriptor.runs_finished.type}\" AND metric.label.status = \"${each.key}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.saga"]
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A run of saga $${metric.label.saga} ended ${each.key}. List them with `relay runs list --status ${each.key} --url <api url>` and inspect one with `relay runs show RUN_ID`; a FAILED run can be retried with `relay runs retry RUN_ID`."
  }
}
