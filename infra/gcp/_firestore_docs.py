"""How run headers and step records are laid out as Firestore documents.

Layout (``<collection>`` defaults to ``relay_runs``)::

    <collection>/<run doc id>                    run header
    <collection>/<run doc id>/steps/<step doc id> one document per step

Every record field is a top-level document field of the same name. ``input`` and
``output`` are stored as JSON *text*, not as Firestore maps and arrays, because Firestore
cannot hold every JSON value exactly: arrays may not directly contain arrays (``[[1]]``),
map keys are re-ordered and cannot be empty or look like ``__x__``, integers are limited
to 64 bits, and every map key would be indexed by default (write cost, and the limit of
40,000 index entries per document). JSON text round-trips exactly, is indexed by nobody
(see the field overrides in ``firestore.indexes.json``) and counts once against the
1 MiB document limit. Timestamps stay numbers (epoch seconds as doubles, exact) so the
records compare equal after a round trip; only ``expires_at`` is a Firestore timestamp,
because the TTL policy requires one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

from core.domain.audit import audit_from_json, audit_to_json
from core.domain.records import RunId, RunRecord, StepName, StepRecord
from core.domain.status import RunStatus, StepStatus

STEPS_SUBCOLLECTION: Final = "steps"
EXPIRES_AT: Final = "expires_at"
VERSION: Final = "version"
_MAX_ID_BYTES: Final = 1500


def document_id(value: str, *, kind: str) -> str:
    """A valid Firestore document id for a run id or step name, distinct for distinct values.

    Firestore ids may not contain ``/``, be ``.`` or ``..``, match ``__.*__`` or exceed
    1,500 bytes. ``%`` and ``/`` are percent-escaped (so ``urllib.parse.unquote`` of the id
    gives the value back, which makes the mapping one-to-one) and the reserved shapes get
    one more escaped character; every other character, Unicode included, is kept, so ids
    stay readable in the console. The real value is also stored in the document.

    Raises:
        ValueError: the value is empty or its id would be over 1,500 bytes.
    """
    if not value:
        raise ValueError(f"{kind} must be a non-empty string")
    escaped = value.replace("%", "%25").replace("/", "%2F")
    if escaped in {".", ".."}:
        escaped = escaped.replace(".", "%2E")
    elif escaped.startswith("__") and escaped.endswith("__"):
        escaped = "%5F" + escaped[1:]
    if len(escaped.encode()) > _MAX_ID_BYTES:
        raise ValueError(
            f"{kind} {value[:40]!r}... is too long for a Firestore document id "
            f"(at most {_MAX_ID_BYTES} bytes once '%' and '/' are escaped)"
        )
    return escaped


def expiry_timestamp(epoch_seconds: float) -> datetime:
    """The ``expires_at`` value for a record that may be deleted after ``epoch_seconds``."""
    return datetime.fromtimestamp(epoch_seconds, UTC)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


def run_to_document(run: RunRecord, *, expires_at: datetime | None) -> dict[str, Any]:
    """The header document of ``run``; ``expires_at`` is set only on finished runs."""
    return {
        "run_id": run.run_id,
        "saga": run.saga,
        "status": run.status.value,
        "input": _dumps(run.input),
        "output": _dumps(run.output),
        "error": run.error,
        "definition_hash": run.definition_hash,
        "idempotency_key": run.idempotency_key,
        "created_at": float(run.created_at),
        "updated_at": float(run.updated_at),
        "is_cancel_requested": run.is_cancel_requested,
        "compensation_reason": run.compensation_reason,
        "redrive_count": run.redrive_count,
        "redriven_at": _float_or_none(run.redriven_at),
        "audit": audit_to_json(run.audit),
        "error_detail": run.error_detail,
        VERSION: run.version,
        EXPIRES_AT: expires_at,
    }


def run_from_document(doc: dict[str, Any]) -> RunRecord:
    """The header stored in ``doc``."""
    return RunRecord(
        run_id=RunId(doc["run_id"]),
        saga=doc["saga"],
        status=RunStatus(doc["status"]),
        input=json.loads(doc["input"]),
        output=json.loads(doc["output"]),
        error=doc["error"],
        definition_hash=doc["definition_hash"],
        idempotency_key=doc["idempotency_key"],
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        is_cancel_requested=bool(doc["is_cancel_requested"]),
        compensation_reason=doc.get("compensation_reason"),  # absent before it existed
        version=doc[VERSION],
        # Absent from documents written before the sweeper kept a back-off.
        redrive_count=int(doc.get("redrive_count") or 0),
        redriven_at=_float_or_none(doc.get("redriven_at")),
        audit=audit_from_json(doc.get("audit")),  # absent before audits existed
        error_detail=doc.get("error_detail"),  # absent before issue 10
    )


def step_to_document(step: StepRecord, *, expires_at: datetime | None) -> dict[str, Any]:
    """The document of one step record."""
    return {
        "run_id": step.run_id,
        "name": step.name,
        "status": step.status.value,
        "attempt": step.attempt,
        "budget_start": step.budget_start,
        "compensation_attempts": step.compensation_attempts,
        "lease_until": _float_or_none(step.lease_until),
        "retry_at": _float_or_none(step.retry_at),
        "output": _dumps(step.output),
        "error": step.error,
        "started_at": _float_or_none(step.started_at),
        "finished_at": _float_or_none(step.finished_at),
        "updated_at": float(step.updated_at),
        "error_detail": step.error_detail,
        VERSION: step.version,
        EXPIRES_AT: expires_at,
    }


def step_from_document(doc: dict[str, Any]) -> StepRecord:
    """The step record stored in ``doc``."""
    return StepRecord(
        run_id=RunId(doc["run_id"]),
        name=StepName(doc["name"]),
        status=StepStatus(doc["status"]),
        attempt=doc["attempt"],
        budget_start=doc["budget_start"],
        compensation_attempts=doc.get("compensation_attempts", 0),  # absent before it existed
        lease_until=doc["lease_until"],
        retry_at=doc["retry_at"],
        output=json.loads(doc["output"]),
        error=doc["error"],
        started_at=doc["started_at"],
        finished_at=doc["finished_at"],
        updated_at=doc["updated_at"],
        version=doc[VERSION],
        error_detail=doc.get("error_detail"),  # absent before issue 10
    )
