"""``relay publish``: the local way to send an event that starts or resumes runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tooling.cli import main


@pytest.fixture(autouse=True)
def parcel_sagas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("RELAY_DATA_DIR", str(tmp_path / "relay"))
    monkeypatch.setenv("RELAY_SAGA_MODULES", "parcel=tests.e2e.waits_fixture:saga")
    for name in ("RELAY_BACKEND", "RELAY_SAGAS", "RELAY_FAULTS"):
        monkeypatch.delenv(name, raising=False)
    yield


def relay(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_publish_hands_the_event_to_the_run_its_correlation_id_names() -> None:
    started = relay("start", "parcel", "--input", '{"parcel": "p-9"}', "--idempotency-key", "p-9")
    run_id = started.stdout.strip()
    data = json.dumps({"parcel": "p-9", "amount": 3})

    first = relay("publish", "payments.card.confirmed", "--data", data, "--id", "e-1", "--json")
    again = relay("publish", "payments.card.confirmed", "--data", data, "--id", "e-1", "--json")
    other = relay("publish", "payments.card.confirmed", "--data", '{"parcel": "p-0"}')

    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout) == {"started": [], "resumed": [run_id], "rejected": {}}
    assert json.loads(again.stdout)["resumed"] == []  # the step keeps only the first event
    assert other.exit_code == 0 and "no run waits for this event" in other.stdout


def test_publish_on_a_malformed_topic_exits_2_and_changes_nothing() -> None:
    result = relay("publish", "payments..confirmed")
    assert result.exit_code == 2
    assert "payments..confirmed" in result.output


def test_publish_with_malformed_data_names_the_data_option() -> None:
    result = relay("publish", "payments.card.confirmed", "--data", "{not json")
    assert result.exit_code == 2
    assert "--data" in result.output and "--input" not in result.output


def test_publish_that_every_subscribed_saga_rejects_exits_3(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An event every subscriber refuses (invalid input) is an error a script can see."""
    monkeypatch.setenv("RELAY_SAGA_MODULES", "greet=tests.support.entry_points:greet")
    result = relay("publish", "people.ada.joined", "--data", '{"wrong": 1}', "--json")

    assert result.exit_code == 3, result.output
    assert set(json.loads(result.stdout)["rejected"]) == {"greet"}
