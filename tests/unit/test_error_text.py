"""Public errors are sanitised, details are redacted, logs never see the raw text (issue 10)."""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel, SecretStr

from core import NonRetryableStepError, RetryPolicy, RunStatus, Saga, StepContext
from core.domain.errors_text import (
    MAX_DETAIL_CHARS,
    REDACTED,
    WITHHELD,
    Redactor,
    describe_exception,
    secret_values,
)
from core.result import Failure
from infra.memory.harness import memory_harness

TOKEN = "tok_SuperSecret42"
BEARER = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJl"


class Checkout(BaseModel):
    """An input with secret-looking fields."""

    customer: str
    payment_token: str
    api_password: str | None = None


class Credentials(BaseModel):
    """A model with a SecretStr field under an ordinary name."""

    user: str
    passphrase_hint: str
    value: SecretStr


class Declined(NonRetryableStepError):
    """A business rejection that opts in to a public message."""

    public_message = "the payment method was declined"


def checkout_saga(raise_in_step: BaseException | None = None, failure: object = None) -> Saga:
    saga = Saga("checkout", input_model=Checkout)

    @saga.step(retry=RetryPolicy(max_attempts=1))
    def charge(ctx: StepContext[Checkout]) -> object:
        if failure is not None:
            return Failure(failure)
        assert raise_in_step is not None
        raise raise_in_step

    return saga


def run_failing(exc: BaseException | None = None, *, failure: object = None) -> tuple[str, ...]:
    """Run the checkout saga once; the run's and the step's error texts."""
    h = memory_harness([checkout_saga(exc, failure)])
    data = {"customer": "c-1", "payment_token": TOKEN, "api_password": "hunter2-pass"}
    snapshot = h.run("checkout", data)
    assert snapshot.run.status is RunStatus.COMPENSATED
    step = snapshot.step("charge")
    assert step.error is not None and step.error_detail is not None
    assert snapshot.run.error is not None and snapshot.run.error_detail is not None
    return snapshot.run.error, snapshot.run.error_detail, step.error, step.error_detail


def test_an_exception_shows_only_its_class_and_a_generic_message_publicly() -> None:
    """str(exc) stays out of the public error; the redacted full text is the detail."""
    run_error, run_detail, step_error, step_detail = run_failing(
        RuntimeError(f"charge of {TOKEN} for c-1 failed (Authorization: Bearer {BEARER})")
    )

    assert step_error == f"RuntimeError: {WITHHELD}"
    assert run_error == f"step 'charge' failed after 1 attempt(s): RuntimeError: {WITHHELD}"
    assert (
        step_detail
        == f"RuntimeError: charge of {REDACTED} for c-1 failed (Authorization: {REDACTED})"
    )
    assert run_detail.endswith(step_detail)
    for text in (run_error, run_detail, step_error, step_detail):
        assert TOKEN not in text and BEARER not in text


def test_an_exception_may_opt_in_to_a_public_message() -> None:
    """A public_message (class attribute or keyword) is what every reader sees."""
    _, _, step_error, step_detail = run_failing(Declined(f"token {TOKEN} declined"))
    assert step_error == "Declined: the payment method was declined"
    assert step_detail == f"Declined: token {REDACTED} declined"

    _, _, keyword_error, _ = run_failing(NonRetryableStepError("x", public_message="out of stock"))
    assert keyword_error == "NonRetryableStepError: out of stock"


def test_a_public_message_is_redacted_too() -> None:
    """Even an opted-in message loses secret input values and credential shapes."""
    _, _, step_error, _ = run_failing(NonRetryableStepError("x", public_message=f"bad {TOKEN}"))
    assert step_error == f"NonRetryableStepError: bad {REDACTED}"


def test_a_plain_failure_value_is_the_step_authors_wording_redacted() -> None:
    """Failure("...") is a deliberate business outcome: shown, but with secrets removed."""
    _, _, step_error, step_detail = run_failing(failure=f"declined: {TOKEN}; pw hunter2-pass")
    assert step_error == step_detail == f"declined: {REDACTED}; pw {REDACTED}"


def test_logs_carry_the_redacted_detail_never_the_raw_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing the engine logs while a step fails contains the secret values."""
    caplog.set_level(logging.DEBUG)
    run_failing(RuntimeError(f"boom {TOKEN} password=hunter2-pass"))
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert TOKEN not in logged and "hunter2-pass" not in logged
    assert f"boom {REDACTED} password={REDACTED}" in logged  # the operator sees the detail


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: {REDACTED}"),
        ("{'Authorization': 'Bearer abc.def.ghi'}", f"{{'Authorization': '{REDACTED}'}}"),
        (f"got 401 for bearer {BEARER}", f"got 401 for bearer {REDACTED}"),
        (f"jwt {BEARER} expired", f"jwt {REDACTED} expired"),
        ("password=hunter2&user=ada", f"password={REDACTED}&user=ada"),
        ("{'api_key': 'abcd1234', 'n': 1}", f"{{'api_key': '{REDACTED}', 'n': 1}}"),
        ('{"client_secret": "s3cr3t"}', f'{{"client_secret": "{REDACTED}"}}'),
        ("postgres://relay:s3cret@db:5432/x", f"postgres://relay:{REDACTED}@db:5432/x"),
        ("card 4242 4242 4242 4242 refused", f"card {REDACTED} refused"),
        ("order 1234567890123 refused", "order 1234567890123 refused"),  # fails Luhn
        ("key AKIAIOSFODNN7EXAMPLE leaked", f"key {REDACTED} leaked"),
        ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", f"stripe {REDACTED}"),
        ("relay key rk_k1a2b3_Zm9vYmFyYmF6cXV4", f"relay key {REDACTED}"),
        ("token expired yesterday", "token expired yesterday"),
        ("basic validation failed", "basic validation failed"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY----- after",
            f"{REDACTED} after",
        ),
    ],
)
def test_credential_shapes_are_redacted_and_prose_is_not(text: str, expected: str) -> None:
    """Common credential patterns become [redacted]; ordinary words survive."""
    assert Redactor().redact(text) == expected


def test_secret_values_come_from_secret_names_and_secret_types() -> None:
    """Values under secret-looking names (nested too) and SecretStr values are secret."""
    model = Credentials(user="ada", passphrase_hint="pets", value=SecretStr("pw-1234"))
    raw = {
        "customer": "c-1",
        "Card": {"number": "4242424242424242", "exp": "12/30"},
        "items": [{"AUTHORIZATION": "Basic abcdef"}, {"sku": "SKU-1"}],
        "refresh_token": None,
    }
    assert set(secret_values(model)) == {"pets", "pw-1234"}
    assert set(secret_values(raw)) == {"4242424242424242", "12/30", "Basic abcdef"}


def test_deeply_nested_input_does_not_break_the_redactor() -> None:
    """An input nested far deeper than the walk's limit is walked safely."""
    nested: object = {"token": "deep-secret"}
    for _ in range(5000):
        nested = [nested]
    assert Redactor.for_values(nested).redact("deep-secret") == "deep-secret"


def test_describe_exception_without_a_message_is_just_the_class() -> None:
    """An exception with no text has the class name as its detail."""
    text = describe_exception(KeyError())
    assert (text.public, text.detail) == (f"KeyError: {WITHHELD}", "KeyError")


def test_a_huge_exception_message_is_kept_bounded() -> None:
    """A megabyte of exception text is cut (saying so) before it reaches the records."""
    _, run_detail, step_error, step_detail = run_failing(RuntimeError("x" * 1_000_000))
    assert len(step_detail) <= MAX_DETAIL_CHARS and step_detail.endswith("more characters]")
    assert len(run_detail) <= MAX_DETAIL_CHARS + 100
    assert step_error == f"RuntimeError: {WITHHELD}"


def test_bounded_redaction_still_redacts_what_it_keeps() -> None:
    """The kept prefix of a long text is redacted like any text."""
    text = f"password={TOKEN} " + "y" * 50_000
    kept = Redactor().redact_bounded(text, 1_000)
    assert TOKEN not in kept and kept.startswith(f"password={REDACTED}") and len(kept) <= 1_000


def test_a_compensation_that_runs_out_keeps_its_secret_out_of_the_run_error() -> None:
    """A failing compensation's run error says what to do; the detail has the redacted cause."""
    saga = Saga("refunds", input_model=Checkout)

    @saga.step
    def charge(ctx: StepContext[Checkout]) -> str:
        return "charged"

    @charge.compensation(retry=RetryPolicy(max_attempts=1))
    def refund(ctx: StepContext[Checkout]) -> None:
        raise ConnectionError(f"refund of {ctx.input.payment_token} refused")

    @saga.step(retry=RetryPolicy(max_attempts=1))
    def ship(ctx: StepContext[Checkout]) -> None:
        raise NonRetryableStepError("no courier", public_message="no courier available")

    h = memory_harness([saga])
    snapshot = h.run("refunds", {"customer": "c-1", "payment_token": TOKEN})

    run = snapshot.run
    assert run.status is RunStatus.FAILED
    assert run.error is not None and run.error_detail is not None
    assert "relay runs retry" in run.error and f"ConnectionError: {WITHHELD}" in run.error
    assert f"ConnectionError: refund of {REDACTED} refused" in run.error_detail
    assert run.compensation_reason is not None
    assert run.compensation_reason.endswith("NonRetryableStepError: no courier available")
    texts = [run.error, run.error_detail, run.compensation_reason]
    texts += [text for step in snapshot.steps.values() for text in (step.error, step.error_detail)]
    assert all(TOKEN not in (text or "") for text in texts)
