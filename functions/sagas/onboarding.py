"""The example onboarding saga: open a user account, then send the welcome email.

Both steps call demo services (``functions.demo_services``) with ``ctx.idempotency_key``; their
compensations close the account and, if the customer was already welcomed, tell them the
account was closed. Importing this module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints

from core.domain.context import StepContext
from core.domain.records import RunSnapshot
from core.domain.retry_policy import RetryPolicy
from core.domain.saga import Saga
from core.domain.status import RunStatus
from functions.demo_services import emails, users

WELCOME = "welcome"
CLOSURE = "account_closed"
STEP_TIMEOUT_SECONDS = 10.0

_SERVICE_RETRY = RetryPolicy(max_attempts=4, initial_delay_seconds=0.5, max_delay_seconds=10.0)
# A compensation that gives up leaves the run FAILED for a human, so undo steps try hard.
_UNDO_RETRY = RetryPolicy(max_attempts=20, initial_delay_seconds=0.5, max_delay_seconds=30.0)


class OnboardingInput(BaseModel):
    """What a client posts to ``/v1/sagas/onboarding/runs``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    email: Annotated[
        str,
        StringConstraints(strip_whitespace=True, max_length=254, pattern=emails.ADDRESS_PATTERN),
    ]
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def _build_output(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The run's output: the new account and the welcome message that announced it."""
    return {
        "user_id": outputs["create_user"]["user_id"],
        "welcome_message_id": outputs["send_welcome_email"]["message_id"],
    }


saga = Saga(
    "onboarding",
    input_model=OnboardingInput,
    description="Create a user account and send the welcome email",
    output=_build_output,
)
SIGNED_UP_TOPIC = "users.*.signed_up"
saga.on_event(SIGNED_UP_TOPIC)
"""An identity provider's sign-up event starts an onboarding run with the event's data as
input (``relay publish users.u-7.signed_up --data '{"email": "ada@example.com", "name":
"Ada"}'``); a redelivered event finds the run it started and starts no other."""


def _input(ctx: StepContext) -> OnboardingInput:
    """The run input as the model (the engine parses it; direct unit calls may pass JSON)."""
    if isinstance(ctx.input, OnboardingInput):
        return ctx.input
    return OnboardingInput.model_validate(ctx.input)


@saga.step(retry=_SERVICE_RETRY, timeout_seconds=STEP_TIMEOUT_SECONDS)
def create_user(ctx: StepContext) -> dict[str, Any]:
    """Open the account; an email already in use rejects the run without retry."""
    request = _input(ctx)
    user = users.create(ctx.idempotency_key, request.email, request.name)
    return {"user_id": user.user_id, "email": user.email}


@create_user.compensation(retry=_UNDO_RETRY)
def deactivate_user(ctx: StepContext) -> None:
    """Close the account so the address is free again and nobody can sign in to it."""
    users.deactivate(ctx.idempotency_key)


@saga.step(retry=_SERVICE_RETRY, timeout_seconds=STEP_TIMEOUT_SECONDS)
def send_welcome_email(ctx: StepContext) -> dict[str, Any]:
    """Welcome the new user by email."""
    request = _input(ctx)
    email = emails.send(
        ctx.idempotency_key, request.email, WELCOME, subject=f"Welcome, {request.name}"
    )
    return {"message_id": email.message_id}


@send_welcome_email.compensation(retry=_UNDO_RETRY)
def send_closure_email(ctx: StepContext) -> None:
    """Apologise and explain the account was closed, if (and only if) it was announced.

    Suppressing the welcome first means a welcome still in flight from a timed-out
    attempt can no longer go out after this point.
    """
    if emails.suppress(ctx.idempotency_key, WELCOME):
        return
    emails.send(
        ctx.idempotency_key,
        _input(ctx).email,
        CLOSURE,
        subject="Sorry: we could not finish setting up your account",
    )


@saga.invariant
def account_matches_outcome(snapshot: RunSnapshot) -> Iterator[str]:
    """COMPLETED: an active account was welcomed. COMPENSATED: no account stays open."""
    run = snapshot.run
    user = users.get(f"{run.run_id}:create_user")
    welcome_key = f"{run.run_id}:send_welcome_email"
    welcome = emails.get(welcome_key, WELCOME)
    was_welcomed = welcome is not None and welcome.is_sent
    if run.status is RunStatus.COMPLETED:
        if user is None or not user.is_active:
            yield f"run {run.run_id} COMPLETED without an active account ({user})"
        if not was_welcomed:
            yield f"run {run.run_id} COMPLETED without a welcome email"
    elif run.status in (RunStatus.COMPENSATED, RunStatus.CANCELLED):
        if user is not None and user.is_active:
            yield f"run {run.run_id} is {run.status} but account {user.user_id} is still open"
        if was_welcomed and emails.get(welcome_key, CLOSURE) is None:
            yield f"run {run.run_id} is {run.status}: the user was welcomed and never told"
    else:
        yield f"run {run.run_id} ended {run.status}, not COMPLETED or COMPENSATED: {run.error}"
