"""The chaos campaign on the AWS stack: order runs under failures and duplicates on moto.

The handler runs in this process behind the event-source poller of
``tests/e2e/test_aws_stack.py``; duplicates are the poller's (SQS at-least-once
delivery), failures the engine's own ``RELAY_FAULTS``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from functions import _wiring
from functions.checks import check_runs
from functions.sagas.order import demo_inputs
from tests.e2e.test_aws_stack import (  # noqa: F401 (fixtures used by name)
    TERMINAL,
    EventSourcePoller,
    restore_logging,
    start_order,
)
from tests.functions.test_aws_handler import (  # noqa: F401 (fixtures used by name)
    AwsStack,
    aws_clients,
    aws_stack,
    configure_aws_env,
    moto_endpoint,
)

CHAOS_RUNS = 100
CHAOS_FAULTS = "*:fail@0.2;seed=11"
CHAOS_DUPLICATES = 0.1


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_chaos_campaign_on_the_aws_stack_ends_clean(
    aws_stack: AwsStack,  # noqa: F811 (the fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100 order runs under 20% step failures and 10% duplicate deliveries all end well.

    Crash faults are not injected: they ``os._exit`` the process that runs the handler,
    which here is the test process itself.
    """
    monkeypatch.setenv("RELAY_FAULTS", CHAOS_FAULTS)
    configure_aws_env(monkeypatch, aws_stack, data_dir=tmp_path, sagas="order")
    began = time.monotonic()
    run_ids = [
        start_order(order, f"chaos-{number}")
        for number, order in enumerate(demo_inputs(CHAOS_RUNS, seed=11))
    ]
    poller = EventSourcePoller(aws_stack, duplicate_probability=CHAOS_DUPLICATES, seed=11)
    engine = _wiring.get_engine()

    def all_terminal() -> bool:
        finished = engine.runs.list(saga="order", statuses=sorted(TERMINAL), limit=1000)
        return len(finished) >= CHAOS_RUNS

    poller.run_until(all_terminal, timeout_seconds=240)

    report = check_runs(engine, run_ids, data_dir=tmp_path)
    figures = {
        "runs": CHAOS_RUNS,
        "statuses": dict(report.statuses),
        "step_attempts": report.step_attempts,
        "batches": poller.batches,
        "reported_failures": sum(poller.reported.values()),
        "duplicates_sent": poller.duplicates,
        "seconds": round(time.monotonic() - began, 1),
    }
    print("aws chaos:", json.dumps(figures))
    assert report.is_clean, report.to_json()
    assert set(report.statuses) <= {"COMPLETED", "COMPENSATED"}
    assert poller.duplicates > 0
