"""Run API callers on Lambda: the API Gateway authorizer's identity through Mangum, and API
keys in the DynamoDB table (moto server), driven with golden events."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from core.ports.api_keys import issue_key
from functions import aws as lambda_entry
from infra.aws.dynamodb_api_keys import DynamoDBApiKeyStore
from tests.support.aws_stack import CONTEXT, AwsStack, configure_aws_env, golden

USER_ARN = "arn:aws:iam::123456789012:user/ci"


@pytest.fixture
def greet_lambda(aws_stack: AwsStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AwsStack:
    """The Lambda configured like a deployment serving the test saga ``greet``."""
    monkeypatch.setenv("RELAY_SAGA_MODULES", "greet=tests.support.entry_points:greet")
    configure_aws_env(monkeypatch, aws_stack, data_dir=tmp_path / "relay-data", sagas="greet")
    return aws_stack


def start_event(**headers: str) -> dict[str, Any]:
    event = golden("apigw_v2_start")
    event["headers"].update(headers)
    event["requestContext"]["authorizer"] = {"iam": {"userArn": USER_ARN}}
    return event


def list_event(**headers: str) -> dict[str, Any]:
    event = golden("function_url_get_run")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/v1/runs"
    event["headers"].update(headers)
    return event


def test_platform_grants_bound_what_the_authorizer_let_through(
    greet_lambda: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RELAY_PLATFORM_GRANTS without start: 403 naming the IAM caller; nothing written."""
    monkeypatch.setenv("RELAY_PLATFORM_GRANTS", "greet:read")

    refused = lambda_entry.handler(start_event(), CONTEXT)
    listed = lambda_entry.handler(list_event(), CONTEXT)

    assert refused["statusCode"] == 403
    assert f"aws:iam:{USER_ARN}" in json.loads(refused["body"])["message"]
    assert (listed["statusCode"], json.loads(listed["body"])) == (200, {"runs": []})


def test_api_keys_live_in_the_state_table(
    greet_lambda: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RELAY_API_AUTH=api_key on Lambda: keys from the DynamoDB table; none is a 401."""
    monkeypatch.setenv("RELAY_API_AUTH", "api_key")
    store = DynamoDBApiKeyStore(greet_lambda.clients.dynamodb, table_name=greet_lambda.table)
    issued = issue_key(grants="greet:start,read", description="lambda", now=time.time())
    store.create_key(record=issued.record)

    missing = lambda_entry.handler(start_event(), CONTEXT)
    started = lambda_entry.handler(start_event(**{"x-api-key": issued.text}), CONTEXT)
    listed = lambda_entry.handler(list_event(**{"x-api-key": issued.text}), CONTEXT)

    assert missing["statusCode"] == 401
    assert started["statusCode"] == 202, started["body"]
    run_id = json.loads(started["body"])["run_id"]
    assert [run["run_id"] for run in json.loads(listed["body"])["runs"]] == [run_id]
