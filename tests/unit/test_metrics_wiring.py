"""Which metrics sink the composition root builds, and that none costs a cold start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import ConfigurationError
from core.ports.metrics import NullMetrics
from functions.settings import Settings
from functions.wiring import build_metrics

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("google.cloud.monitoring_v3", "google.cloud.monitoring", "grpc")


@pytest.mark.parametrize(
    ("environ", "mode"),
    [
        ({}, "off"),
        ({"RELAY_BACKEND": "gcp"}, "on"),
        ({"RELAY_BACKEND": "aws"}, "on"),
        ({"RELAY_BACKEND": "gcp", "FIRESTORE_EMULATOR_HOST": "127.0.0.1:8081"}, "off"),
        ({"RELAY_BACKEND": "aws", "AWS_ENDPOINT_URL": "http://127.0.0.1:5000"}, "off"),
        ({"RELAY_BACKEND": "aws", "AWS_ENDPOINT_URL": "x", "RELAY_METRICS": "on"}, "on"),
        ({"RELAY_BACKEND": "gcp", "RELAY_METRICS": "OFF"}, "off"),
    ],
)
def test_relay_metrics_auto_is_on_in_the_cloud_and_off_on_emulators(
    environ: dict[str, str], mode: str
) -> None:
    """RELAY_METRICS=auto sends metrics from gcp/aws, not locally nor against emulators."""
    assert Settings.from_env(environ).metrics == mode


def test_an_unknown_relay_metrics_value_is_refused() -> None:
    """A typo in RELAY_METRICS names the variable and the accepted values."""
    with pytest.raises(ConfigurationError, match="RELAY_METRICS='sometimes'"):
        Settings.from_env({"RELAY_METRICS": "sometimes"})


def test_each_backend_gets_its_sink() -> None:
    """gcp: Cloud Monitoring; aws: CloudWatch EMF; local, memory and off: no sink."""
    from infra.aws.emf import EmfMetrics
    from infra.gcp.monitoring import CloudMonitoringMetrics

    gcp = build_metrics(Settings(backend="gcp", gcp_project="relay-test", metrics="on"))
    assert isinstance(gcp, CloudMonitoringMetrics)
    assert gcp.describe()["project"] == "relay-test"
    gcp.close()
    assert isinstance(build_metrics(Settings(backend="aws", metrics="on")), EmfMetrics)
    for settings in (
        Settings(backend="local"),
        Settings(backend="memory", metrics="on"),
        Settings(backend="gcp", gcp_project="relay-test", metrics="off"),
        Settings(backend="gcp", gcp_project=None, metrics="on"),
    ):
        assert isinstance(build_metrics(settings), NullMetrics), settings


def run_python(program: str) -> list[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "RELAY_BACKEND": "gcp"}
    completed = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    return completed.stdout.splitlines()


@pytest.mark.parametrize("entry_point", ["functions.gcp", "functions.aws"])
def test_importing_an_entry_point_imports_neither_monitoring_nor_grpc(entry_point: str) -> None:
    """Cold start pays nothing for metrics: the SDK and grpc load on the first flush."""
    program = f"import sys, {entry_point}\nprint([m for m in {HEAVY!r} if m in sys.modules])\n"
    assert run_python(program) == ["[]"]


def test_building_and_recording_imports_no_monitoring_sdk() -> None:
    """The gcp sink records without importing google.cloud.monitoring (only a flush does)."""
    program = (
        "import sys\n"
        "from functions.settings import Settings\n"
        "from functions.wiring import build_metrics\n"
        "sink = build_metrics(Settings(backend='gcp', gcp_project='p', metrics='on'))\n"
        "sink.record_attempt(saga='s', step='a', action='execute', outcome='succeeded',\n"
        "                    duration_seconds=0.01)\n"
        "sink.record_run(saga='s', status='COMPLETED')\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    assert run_python(program) == ["[]"]
