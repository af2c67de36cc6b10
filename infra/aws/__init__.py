"""The AWS backend: DynamoDB state, SQS queue and S3 outputs; boto3 is imported on first use.

Importing this package (or any module in it) never imports boto3 or botocore: an adapter
receives a ready client, and only ``from_settings`` and the ``create_*`` helpers build one.
See ``infra/aws/README.md`` for the table, queue and bucket layouts and for running the
tests against moto server.
"""
