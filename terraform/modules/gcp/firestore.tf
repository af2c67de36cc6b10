# Firestore (Native mode) with the composite indexes and field overrides of
# infra/gcp/firestore.indexes.json, read here rather than restated: the listing queries,
# the TTL policy on expires_at for the run and step collection groups, and the index
# exemptions for the JSON text and monotonic timestamps.

locals {
  firestore_indexes_path = coalesce(var.firestore_indexes_path, "${path.module}/../../../infra/gcp/firestore.indexes.json")
  firestore_indexes      = jsondecode(file(local.firestore_indexes_path))

  # The run collection is the one the composite indexes name (RELAY_FIRESTORE_COLLECTION).
  firestore_collection = one(distinct([for index in local.firestore_indexes.indexes : index.collectionGroup]))

  firestore_composite_indexes = {
    for index in local.firestore_indexes.indexes :
    join("/", concat([index.collectionGroup], [for field in index.fields : "${field.fieldPath}:${field.order}"])) => index
  }
  firestore_field_overrides = {
    for override in local.firestore_indexes.fieldOverrides : "${override.collectionGroup}/${override.fieldPath}" => override
  }
}

resource "google_firestore_database" "relay" {
  depends_on = [google_project_service.api]

  project                           = var.project
  name                              = var.firestore_database
  location_id                       = coalesce(var.firestore_location, var.region)
  type                              = "FIRESTORE_NATIVE"
  concurrency_mode                  = "OPTIMISTIC"
  app_engine_integration_mode       = "DISABLED"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_DISABLED"
  delete_protection_state           = var.firestore_delete_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = "DELETE"
}

resource "google_firestore_index" "composite" {
  for_each = local.firestore_composite_indexes

  project     = var.project
  database    = google_firestore_database.relay.name
  collection  = each.value.collectionGroup
  query_scope = each.value.queryScope

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path = fields.value.fieldPath
      order      = fields.value.order
    }
  }
}

# TTL policies (ttl = true: Firestore deletes a document once its expires_at has passed)
# and single-field index exemptions (indexes = []: an empty index_config disables them).
resource "google_firestore_field" "override" {
  for_each = local.firestore_field_overrides

  project    = var.project
  database   = google_firestore_database.relay.name
  collection = each.value.collectionGroup
  field      = each.value.fieldPath

  dynamic "ttl_config" {
    for_each = each.value.ttl ? [each.value.fieldPath] : []
    content {}
  }

  index_config {
    dynamic "indexes" {
      for_each = each.value.indexes
      content {
        order        = lookup(indexes.value, "order", null)
        array_config = lookup(indexes.value, "arrayConfig", null)
        query_scope  = lookup(indexes.value, "queryScope", null)
      }
    }
  }
}
