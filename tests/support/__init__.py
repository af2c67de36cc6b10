"""What tests share: emulators, stacks, adapter fixtures per port, test sagas and clients.

Emulators start as processes on 127.0.0.1 and stop by PID (``aws``, ``gcp``, ``processes``).

Where an emulator cannot run (no Java, no gcloud) its tests skip with the reason — except
under ``CI=true``, where a missing emulator is a failure: CI must prove every backend.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def is_ci() -> bool:
    """True when running in CI (``CI=true``), where skipping an emulator test is not allowed."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip the test (locally) or fail it (in CI) because an emulator is missing."""
    if is_ci():
        pytest.fail(f"emulator required in CI: {reason}", pytrace=False)
    pytest.skip(reason)
