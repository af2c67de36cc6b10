"""The audit trail of runs (``RunRecord.audit``) in the StateStore contract, on every adapter.

Operator actions ride on the conditional write of the transition they record: stored,
read back and listed exactly, and fenced like any write (a stale writer adds nothing).
"""

from __future__ import annotations

import pytest

from core.domain.audit import MAX_AUDIT_ENTRIES, AuditEntry, audit_from_json, audit_to_json
from core.domain.records import RunId, StateChange
from core.domain.status import RunStatus
from core.errors import ConcurrencyConflict
from core.ports.state_store import StateStore
from tests.contract.test_state_store import NOW, T0, create, make_run, make_steps

RETRY = AuditEntry.of(action="retry", actor="hmac:local", source="127.0.0.1", at=NOW + 0.125)
CANCEL = AuditEntry.of(action="cancel", actor="cli:ada", source="cli", at=NOW + 7.5)


def test_audit_entries_round_trip_and_append_in_order(state_store: StateStore) -> None:
    """Entries appended by two transitions load back equal, oldest first, and are listed."""
    create(state_store, status=RunStatus.FAILED)
    stored = state_store.load_run(run_id=RunId("r-1"))
    assert stored is not None and stored.run.audit == ()
    retried = stored.run.retried(now=NOW, definition_hash="sha256:abc", is_compensating=False)
    first = retried.audited(RETRY)
    state_store.apply(change=StateChange(RunId("r-1"), run=first))
    second = first.waiting(now=NOW + 1).audited(CANCEL)
    state_store.apply(change=StateChange(RunId("r-1"), run=second))

    again = state_store.load_run(run_id=RunId("r-1"))

    assert again is not None and again.run == second
    assert again.run.audit == (RETRY, CANCEL)
    assert state_store.list_runs() == [second]


def test_a_stale_audited_write_conflicts_and_adds_nothing(state_store: StateStore) -> None:
    """An audited write from an old version is refused; the trail is unchanged."""
    create(state_store, status=RunStatus.RUNNING)
    stored = state_store.load_run(run_id=RunId("r-1"))
    assert stored is not None
    state_store.apply(change=StateChange(RunId("r-1"), run=stored.run.waiting(now=NOW)))

    with pytest.raises(ConcurrencyConflict):
        stale = stored.run.waiting(now=NOW + 1).audited(CANCEL)
        state_store.apply(change=StateChange(RunId("r-1"), run=stale))

    again = state_store.load_run(run_id=RunId("r-1"))
    assert again is not None and again.run.audit == ()


def test_a_run_created_with_an_audit_keeps_it(state_store: StateStore) -> None:
    """A header carrying entries at creation stores them (every field round-trips)."""
    run = make_run("r-2", created_at=T0).audited(RETRY)

    state_store.create_run(run=run, steps=make_steps("r-2"), outbox=())
    loaded = state_store.load_run(run_id=RunId("r-2"))

    assert loaded is not None and loaded.run == run


def test_the_trail_keeps_the_latest_entries_and_clips_fields() -> None:
    """At most MAX_AUDIT_ENTRIES are kept; actors and sources are printable and clipped."""
    run = make_run()
    for index in range(MAX_AUDIT_ENTRIES + 5):
        run = run.audited(AuditEntry.of(action="retry", actor=f"a{index}", source="s", at=index))
    odd = AuditEntry.of(action="cancel", actor="x\n" * 500, source="\x00", at=1)

    assert (
        len(run.audit) == MAX_AUDIT_ENTRIES and run.audit[-1].actor == f"a{MAX_AUDIT_ENTRIES + 4}"
    )
    assert len(odd.actor) == 200 and "\n" not in odd.actor and odd.source == "?"
    assert audit_from_json(audit_to_json(run.audit)) == run.audit
    assert audit_to_json(()) is None and audit_from_json(None) == ()
