"""Backoff between attempts: exponential, capped, with jitter."""

from __future__ import annotations

import random

from core.domain.retry_policy import RetryPolicy


def backoff_delay_seconds(
    policy: RetryPolicy, *, failed_attempts: int, rng: random.Random
) -> float:
    """Seconds to wait before the next attempt after ``failed_attempts`` failures.

    Jitter only shortens the delay (by up to ``policy.jitter`` of it), so the cap holds and
    simultaneous failures spread out instead of retrying in lockstep.
    """
    exponent = max(failed_attempts - 1, 0)
    base = min(
        policy.max_delay_seconds, policy.initial_delay_seconds * policy.backoff_factor**exponent
    )
    return base * (1.0 - policy.jitter * rng.random())


def has_attempts_left(policy: RetryPolicy, *, used: int) -> bool:
    """True when another attempt fits in the policy's budget."""
    return used < policy.max_attempts
