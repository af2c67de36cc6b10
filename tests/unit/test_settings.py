"""Settings from the environment, and the composition root's refusals."""

from __future__ import annotations

import pytest

from core import ConfigurationError
from functions.settings import Settings
from functions.wiring import build_backend


def test_cloud_settings_use_one_spelling_per_variable() -> None:
    """Each cloud setting comes from the variable named in its docstring."""
    settings = Settings.from_env(
        {
            "RELAY_BACKEND": "aws",
            "RELAY_DYNAMODB_TABLE": "runs",
            "RELAY_SQS_QUEUE_URL": "http://127.0.0.1:1/q",
            "RELAY_S3_BUCKET": "outputs",
            "GOOGLE_CLOUD_PROJECT": "p",
            "RELAY_TASKS_QUEUE": "projects/p/locations/l/queues/q",
            "RELAY_WORKER_URL": "https://w",
        }
    )
    assert (settings.backend, settings.dynamodb_table, settings.sqs_queue_url) == (
        "aws",
        "runs",
        "http://127.0.0.1:1/q",
    )
    assert (settings.s3_bucket, settings.gcp_project, settings.worker_url) == (
        "outputs",
        "p",
        "https://w",
    )
    assert settings.tasks_queue == "projects/p/locations/l/queues/q"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RELAY_BACKEND": "azure"}, "RELAY_BACKEND='azure'"),
        ({"RELAY_INLINE_OUTPUT_LIMIT": "lots"}, "RELAY_INLINE_OUTPUT_LIMIT"),
        ({"RELAY_SAGA_MODULES": "broken"}, "RELAY_SAGA_MODULES"),
    ],
)
def test_bad_settings_name_the_variable(environ: dict[str, str], message: str) -> None:
    """A malformed variable is refused with its name in the message."""
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(environ)


def test_aws_backend_without_a_queue_url_is_refused() -> None:
    """RELAY_BACKEND=aws without RELAY_SQS_QUEUE_URL says which variable is missing."""
    with pytest.raises(ConfigurationError, match="RELAY_SQS_QUEUE_URL"):
        build_backend(Settings.from_env({"RELAY_BACKEND": "aws"}))
