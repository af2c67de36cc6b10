"""Settings from the environment, and the composition root's refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from core import ConfigurationError
from functions.bundle import SAGA_MODULES
from functions.env_table import optional_text, setting, settings_variables, text
from functions.settings import VARIABLES, Settings
from functions.wiring import build_backend


def test_cloud_settings_use_one_spelling_per_variable() -> None:
    """Each cloud setting comes from the variable its attribute declares."""
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
        ({"RELAY_SAGA_MODULES": "trip=trips"}, "RELAY_SAGA_MODULES entry 'trip=trips'"),
        ({"RELAY_METRICS": "sometimes"}, "RELAY_METRICS='sometimes'"),
        ({"RELAY_TASKS_QUEUES": "{"}, "RELAY_TASKS_QUEUES is not valid JSON"),
        ({"RELAY_PUBSUB_TOPICS": '{"sub": ""}'}, "RELAY_PUBSUB_TOPICS must be a JSON object"),
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


def test_every_attribute_is_declared_once_in_the_table() -> None:
    """Each Settings attribute has its variable in VARIABLES, and each variable one attribute."""
    attributes = [v.attribute for v in VARIABLES.values() if v.attribute is not None]

    assert sorted(attributes) == sorted(f.name for f in dataclasses.fields(Settings))
    assert len(set(attributes)) == len(attributes)


def test_an_attribute_without_a_variable_is_refused() -> None:
    """A field declared without setting() would read nothing: the table refuses the class."""

    @dataclasses.dataclass(frozen=True)
    class Partly:
        named: str = setting("RELAY_X", frozenset(), frozenset(), "x", parse=text)
        plain: str = ""

    with pytest.raises(TypeError, match=r"Partly\.plain is not declared by setting\(\)"):
        settings_variables(Partly)


def test_defaults_are_what_an_empty_environment_reads() -> None:
    """Settings() and Settings.from_env({}) agree; from_env only resolves metrics="auto"."""
    assert Settings.from_env({}) == dataclasses.replace(Settings(), metrics="off")
    assert Settings().saga_modules == SAGA_MODULES


@pytest.mark.parametrize(
    "variable",
    sorted(v.name for v in VARIABLES.values() if v.parse in (text, optional_text)),
)
def test_a_text_variable_fills_the_attribute_it_declares(variable: str) -> None:
    """Setting a text variable changes its attribute, and only that one."""
    declared = VARIABLES[variable]
    assert declared.attribute is not None
    base = {"RELAY_BACKEND": "gcp"}

    changed = Settings.from_env({**base, variable: "  sample-value  "})
    default = Settings.from_env(base)

    assert getattr(changed, declared.attribute) == "sample-value"
    differing = [
        f.name
        for f in dataclasses.fields(Settings)
        if getattr(changed, f.name) != getattr(default, f.name)
    ]
    assert differing == [declared.attribute]


def test_structured_variables_parse_into_their_types() -> None:
    """Lists, maps, paths, numbers and modes parse as their attributes' types."""
    settings = Settings.from_env(
        {
            "RELAY_SAGAS": " order, ,onboarding ",
            "RELAY_SAGA_MODULES": "trip = trips.saga:trip",
            "RELAY_DATA_DIR": "/tmp/relay-x",
            "RELAY_INLINE_OUTPUT_LIMIT": "1024",
            "RELAY_METRICS": "ON",
            "RELAY_TASKS_QUEUES": '{"slow": "projects/p/locations/l/queues/slow"}',
        }
    )

    assert settings.sagas == ("order", "onboarding")
    assert settings.saga_modules == {**SAGA_MODULES, "trip": "trips.saga:trip"}
    assert settings.data_dir == Path("/tmp/relay-x")
    assert settings.inline_output_limit_bytes == 1024
    assert settings.metrics == "on"
    assert settings.tasks_queues == {"slow": "projects/p/locations/l/queues/slow"}


@pytest.mark.parametrize(
    ("environ", "metrics"),
    [
        ({"RELAY_BACKEND": "gcp"}, "on"),
        ({"RELAY_BACKEND": "gcp", "FIRESTORE_EMULATOR_HOST": "127.0.0.1:1"}, "off"),
        ({"RELAY_BACKEND": "aws", "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}, "off"),
        ({"RELAY_BACKEND": "local", "RELAY_METRICS": "auto"}, "off"),
        ({"RELAY_BACKEND": "local", "RELAY_METRICS": "on"}, "on"),
    ],
)
def test_auto_metrics_are_on_in_the_cloud_and_off_on_emulators(
    environ: dict[str, str], metrics: str
) -> None:
    """RELAY_METRICS=auto (the default) sends metrics only from a real cloud backend."""
    assert Settings.from_env(environ).metrics == metrics
