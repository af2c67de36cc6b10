# Large step outputs and run inputs (over RELAY_INLINE_OUTPUT_LIMIT) live here. They expire
# with their run (docs/adr/0008): when a run ends, the engine sets the custom time of its
# objects to the end (infra/gcp/gcs_io.py, mark_run_finished), so they are deleted
# io_retention_days after the run ended, when Firestore's TTL deletes the run record.
# Objects of runs in flight have no custom time and stay, up to io_max_age_days.
resource "google_storage_bucket" "io" {
  #checkov:skip=CKV_GCP_62:access logs would record every step output read and written, a second copy of the traffic to pay for; Cloud Audit Logs cover admin activity
  project                     = var.project
  name                        = "${var.project}-${var.name_prefix}-io"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_custom_time = var.io_retention_days
    }
    action {
      type = "Delete"
    }
  }

  # A backstop for runs that never end.
  lifecycle_rule {
    condition {
      age = var.io_max_age_days
    }
    action {
      type = "Delete"
    }
  }

  # An overwritten or deleted output is kept one day (versioning), then removed for good.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket_iam_member" "io_object_admin" {
  for_each = local.bucket_users

  bucket = google_storage_bucket.io.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.function[each.key].email}"
}
