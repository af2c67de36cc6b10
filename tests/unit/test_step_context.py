"""StepContext: what step code reads, and how it reads earlier outputs as types."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from core import NonRetryableStepError, StepContext
from core.domain.status import Action


class Charge(BaseModel):
    """How a later step reads a charge step's output."""

    charge_id: str
    amount_cents: int


def context(outputs: dict[str, Any], *, action: Action = Action.EXECUTE) -> StepContext[None]:
    return StepContext(
        run_id="r-1",
        saga="order",
        step="ship",
        action=action,
        attempt=1,
        idempotency_key="r-1:ship",
        input=None,
        outputs=outputs,
        deadline_at=0.0,
    )


def test_output_of_validates_an_earlier_output_as_a_model_or_a_type() -> None:
    """A stored JSON output comes back as the model or the generic type asked for."""
    ctx = context({"charge": {"charge_id": "ch-1", "amount_cents": 500, "extra": True}})
    assert ctx.output_of("charge", Charge) == Charge(charge_id="ch-1", amount_cents=500)
    assert ctx.output_of("charge", dict[str, Any])["amount_cents"] == 500


def test_output_of_a_step_without_output_fails_the_step_naming_what_finished() -> None:
    """Reading a step that has no output is a saga bug: no retry, and the message says why."""
    ctx = context({"charge": {"charge_id": "ch-1", "amount_cents": 5}})
    with pytest.raises(NonRetryableStepError, match=r"'reserve', which has none.*charge"):
        ctx.output_of("reserve", Charge)


def test_output_of_the_wrong_shape_fails_the_step_without_retry() -> None:
    """An output that is not the type asked for fails at once, naming step and type."""
    ctx = context({"charge": {"charge_id": "ch-1"}})
    with pytest.raises(NonRetryableStepError, match=r"output of step 'charge' is not a Charge"):
        ctx.output_of("charge", Charge)


def test_a_context_knows_whether_it_undoes_its_step() -> None:
    """is_compensation is true for the compensate action only."""
    assert context({}, action=Action.COMPENSATE).is_compensation
    assert not context({}).is_compensation
