"""``relay keys``: create, list and revoke the run API's keys on the configured backend.

The backend is ``RELAY_BACKEND`` (local: ``relay.db`` in ``RELAY_DATA_DIR``; gcp:
Firestore; aws: DynamoDB, with the same variables the deployed functions read). A key's
text is printed once, at creation; only its sha256 is stored.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from tooling.cli._common import EXIT_USAGE, fail, load_settings, print_json
from tooling.timeline import make_console

if TYPE_CHECKING:
    from core.ports.api_keys import ApiKeyRecord, ApiKeyStore


@click.group()
def keys() -> None:
    """Create, list and revoke API keys of the run API (RELAY_API_AUTH=api_key)."""


@keys.command("create")
@click.option(
    "--grant",
    "grants",
    multiple=True,
    required=True,
    help="What the key may do: SAGA:start,read (repeatable; * for every saga or action).",
)
@click.option("--description", default="", help="Who or what the key is for.")
@click.option("--json", "as_json", is_flag=True, help="Print the key and its record as JSON.")
def create_key(grants: tuple[str, ...], description: str, as_json: bool) -> None:
    """Create a key and print it once (it cannot be shown again)."""
    from core.ports.api_keys import issue_key
    from functions.http.callers import Grants

    try:
        parsed = Grants.parse(";".join(grants), what="--grant")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--grant") from None
    issued = issue_key(grants=parsed.text(), description=description, now=time.time())
    with _key_store() as store:
        store.create_key(record=issued.record)
    if as_json:
        print_json({"key": issued.text, **_key_view(issued.record)})
        return
    click.echo(issued.text)
    click.echo(
        f"key {issued.record.key_id} may {parsed.text()}; keep it secret, it is not shown again",
        err=True,
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
def list_keys(as_json: bool) -> None:
    """Every key (never a secret): id, grants, description, created, revoked."""
    with _key_store() as store:
        records = store.list_keys()
    views = [_key_view(record) for record in records]
    if as_json:
        print_json({"keys": views})
        return
    console = make_console()
    if not views:
        console.print("[dim]no keys[/]")
        return
    for view in views:
        state = f"revoked {view['revoked_at']}" if view["revoked_at"] else "valid"
        console.print(
            f"{view['key_id']}  {view['grants']}  {state}  created {view['created_at']}"
            f"  {view['description']}",
            highlight=False,
        )


@keys.command("revoke")
@click.argument("key_id")
def revoke_key(key_id: str) -> None:
    """Revoke a key: the next request made with it is refused."""
    with _key_store() as store:
        record = store.revoke_key(key_id=key_id, now=time.time())
    if record is None:
        fail(f"no API key {key_id!r}; `relay keys list` shows the ids")
    click.echo(f"key {key_id} revoked")


@contextmanager
def _key_store() -> Iterator[ApiKeyStore]:
    from core.errors import EngineError
    from functions.wiring import build_api_key_store

    settings = load_settings()
    try:
        store = build_api_key_store(settings)
    except EngineError as exc:
        fail(str(exc), code=EXIT_USAGE)
    try:
        yield store
    except EngineError as exc:
        fail(str(exc))
    finally:
        database = getattr(store, "database", None)
        if database is not None:
            database.close()


def _key_view(record: ApiKeyRecord) -> dict[str, Any]:
    from functions.http.views import iso_time

    return {
        "key_id": record.key_id,
        "grants": record.grants,
        "description": record.description,
        "created_at": iso_time(record.created_at),
        "revoked_at": iso_time(record.revoked_at),
    }
