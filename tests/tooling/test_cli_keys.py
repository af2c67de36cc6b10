"""``relay keys`` on the local backend, the CLI's audited retry/cancel, and ``relay dev --host``."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from core.errors import ConfigurationError
from core.ports.api_keys import split_key_text
from functions.settings import Settings
from infra.local.sqlite_api_keys import SQLiteApiKeyStore
from tooling.cli import main
from tooling.dev_auth import auth_description, check_exposure, is_loopback


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh RELAY_DATA_DIR on the local backend."""
    path = tmp_path / "relay"
    monkeypatch.setenv("RELAY_DATA_DIR", str(path))
    for name in ("RELAY_BACKEND", "RELAY_API_AUTH", "RELAY_SAGAS", "RELAY_SAGA_MODULES"):
        monkeypatch.delenv(name, raising=False)
    yield path


def relay(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def stored_keys(data_dir: Path) -> list[object]:
    store = SQLiteApiKeyStore.from_settings(data_dir)
    try:
        return list(store.list_keys())
    finally:
        store.database.close()


def test_keys_are_created_listed_and_revoked(data_dir: Path) -> None:
    """create prints the key once; list never shows a secret; revoke marks it revoked."""
    created = relay("keys", "create", "--grant", "order:start,read", "--grant", "*:read")
    assert created.exit_code == 0, created.output
    text = created.stdout.strip()
    parts = split_key_text(text)
    assert parts is not None
    key_id, secret = parts

    listed = relay("keys", "list", "--json")
    revoked = relay("keys", "revoke", key_id)
    after = json.loads(relay("keys", "list", "--json").stdout)["keys"]

    assert listed.exit_code == 0 and secret not in listed.stdout
    (entry,) = json.loads(listed.stdout)["keys"]
    assert (entry["key_id"], entry["grants"], entry["revoked_at"]) == (
        key_id,
        "*:read;order:read,start",
        None,
    )
    assert revoked.exit_code == 0 and after[0]["revoked_at"] is not None
    assert secret not in (data_dir / "relay.db").read_bytes().decode("latin-1")


def test_bad_grants_and_unknown_keys_are_refused(data_dir: Path) -> None:
    """A malformed --grant is a usage error (2) and writes nothing; an unknown id exits 1."""
    bad = relay("keys", "create", "--grant", "order:delete")
    unknown = relay("keys", "revoke", "000000000000")

    assert bad.exit_code == 2 and "--grant" in bad.output
    assert stored_keys(data_dir) == []
    assert unknown.exit_code == 1 and "relay keys list" in unknown.stderr


def test_cli_retry_and_cancel_are_audited_as_the_user(data_dir: Path) -> None:
    """A cancel from the command line records cli:<login> from "cli" in the run."""
    order = {
        "customer_id": "cust-1",
        "email": "ada@example.com",
        "items": [{"sku": "SKU-BOOK", "quantity": 1}],
        "payment_token": "tok_visa",
    }
    started = relay("start", "order", "--input", json.dumps(order))
    assert started.exit_code == 0, started.output
    run_id = started.stdout.strip()

    cancelled = relay("runs", "cancel", run_id)
    shown = json.loads(relay("runs", "show", run_id, "--json").stdout)

    assert cancelled.exit_code == 0, cancelled.output
    (entry,) = shown["audit"]
    assert (entry["action"], entry["actor"], entry["source"]) == (
        "cancel",
        f"cli:{getpass.getuser()}",
        "cli",
    )


# -- relay dev --host ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("example.org", False),
    ],
)
def test_loopback_addresses(host: str, expected: bool) -> None:
    """Only loopback addresses (and localhost) count as this machine."""
    assert is_loopback(host) is expected


def test_dev_beyond_loopback_without_credentials_refuses_naming_the_fix(tmp_path: Path) -> None:
    """--host 0.0.0.0 with RELAY_API_AUTH unset stops, naming RELAY_API_AUTH and relay keys."""
    with pytest.raises(ConfigurationError, match=r"RELAY_API_AUTH=api_key.*relay keys create"):
        check_exposure(Settings.from_env({}), host="0.0.0.0", data_dir=tmp_path)
    check_exposure(Settings.from_env({}), host="127.0.0.1", data_dir=tmp_path)  # open on loopback
    assert auth_description(Settings.from_env({}), host="127.0.0.1") == "open (loopback)"


def test_dev_beyond_loopback_with_api_keys_needs_a_valid_key(data_dir: Path) -> None:
    """RELAY_API_AUTH=api_key and no valid key: refused; once a key exists: allowed."""
    settings = Settings.from_env({"RELAY_API_AUTH": "api_key"})
    with pytest.raises(ConfigurationError, match="no valid key"):
        check_exposure(settings, host="0.0.0.0", data_dir=data_dir)

    assert relay("keys", "create", "--grant", "order:start").exit_code == 0
    check_exposure(settings, host="0.0.0.0", data_dir=data_dir)
    public = Settings.from_env({"RELAY_API_AUTH": "public"})
    check_exposure(public, host="0.0.0.0", data_dir=data_dir)
    assert auth_description(settings, host="0.0.0.0") == "api_key"
