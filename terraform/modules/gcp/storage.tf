# Large step outputs (over RELAY_INLINE_OUTPUT_LIMIT) live here; they are deleted with the
# runs they belong to (io_retention_days, the run retention).
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
      age = var.io_retention_days
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
