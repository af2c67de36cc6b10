# One Cloud Tasks queue per manifest queue. Retry and rate settings live on the queue (the
# adapter never creates queues): a 503 from the worker is retried with this backoff.
resource "google_cloud_tasks_queue" "queue" {
  for_each   = local.queues
  depends_on = [google_project_service.api]

  project  = var.project
  location = var.region
  name     = "${var.name_prefix}-${each.key}"

  rate_limits {
    max_dispatches_per_second = each.value.max_dispatches_per_second
    max_concurrent_dispatches = each.value.max_concurrent_dispatches
  }

  retry_config {
    max_attempts = each.value.max_attempts
    min_backoff  = "${each.value.min_backoff_seconds}s"
    max_backoff  = "${each.value.max_backoff_seconds}s"
  }
}

# Every function that enqueues steps (its env names RELAY_TASKS_QUEUE) may add tasks to the
# queues, and nothing else on them.
resource "google_cloud_tasks_queue_iam_member" "enqueuer" {
  for_each = {
    for pair in setproduct(keys(local.enqueuers), keys(local.queues)) :
    "${pair[0]}/${pair[1]}" => { function = pair[0], queue = pair[1] }
  }

  project  = var.project
  location = var.region
  name     = google_cloud_tasks_queue.queue[each.value.queue].name
  role     = "roles/cloudtasks.enqueuer"
  member   = "serviceAccount:${google_service_account.function[each.value.function].email}"
}
