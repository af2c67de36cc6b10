# The I/O bucket: step outputs over RELAY_INLINE_OUTPUT_LIMIT (infra/aws/s3_io.py).

resource "aws_s3_bucket" "io" {
  #checkov:skip=CKV_AWS_18:Access logging needs a second bucket and bills per request logged; the functions' own logs record every output they save or load.
  #checkov:skip=CKV_AWS_144:Cross-region replication doubles storage, the only cost at rest; outputs are derived data that a run can recompute, and finished runs expire after 30 days.
  #checkov:skip=CKV2_AWS_62:Nothing consumes object events: Relay reads outputs by key from the run's state.
  bucket_prefix = "${var.name_prefix}-io-"
  tags          = var.tags
}

resource "aws_s3_bucket_public_access_block" "io" {
  bucket = aws_s3_bucket.io.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "io" {
  bucket = aws_s3_bucket.io.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "io" {
  bucket = aws_s3_bucket.io.id

  # SSE-KMS with the AWS-managed aws/s3 key (no key to pay for at rest); the bucket key
  # cuts the KMS requests to one per bucket key period instead of one per object.
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "aws:kms"
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "io" {
  bucket = aws_s3_bucket.io.id

  versioning_configuration {
    status = "Enabled"
  }
}

# Outputs expire with their run (docs/adr/0008): when a run ends, the engine rewrites its
# objects tagged relay-retention=finished (infra/aws/s3_io.py, mark_run_finished), so
# they are deleted output_retention_days after the run ended, when DynamoDB's TTL deletes
# the run record. Objects of runs still in flight carry no tag and stay, up to
# output_max_age_days (a backstop for runs that never end).
resource "aws_s3_bucket_lifecycle_configuration" "io" {
  bucket = aws_s3_bucket.io.id

  rule {
    id     = "expire-outputs-of-finished-runs"
    status = "Enabled"

    filter {
      tag {
        key   = "relay-retention"
        value = "finished"
      }
    }

    expiration {
      days = var.output_retention_days
    }
  }

  rule {
    id     = "expire-outputs-backstop"
    status = "Enabled"

    filter {}

    expiration {
      days = var.output_max_age_days
    }

    # Overwritten and deleted outputs (a retried step, clear_run, the rewrite at the end
    # of a run) are kept a week only.
    noncurrent_version_expiration {
      noncurrent_days = 7
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.io]
}

data "aws_iam_policy_document" "io_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.io.arn, "${aws_s3_bucket.io.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "io" {
  bucket = aws_s3_bucket.io.id
  policy = data.aws_iam_policy_document.io_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.io]
}
