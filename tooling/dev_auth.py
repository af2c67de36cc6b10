"""Who may call ``relay dev``'s run API: open on loopback, credentials anywhere else.

Bound to a loopback address the run API is open (caller kind ``local``) unless
``RELAY_API_AUTH`` is set. Bound to any other address it requires credentials, and the
stack refuses to start when none are configured, naming the fix (issue 10, finding 1).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ConfigurationError

if TYPE_CHECKING:
    from core.ports.state_store import StateStore
    from functions.http.callers import Authenticator
    from functions.settings import Settings


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_description(settings: Settings, *, host: str) -> str:
    """How run API callers authenticate on a stack bound to ``host`` (for the banner)."""
    from functions.http.api_auth import auth_modes

    modes = auth_modes(settings, is_loopback_dev=is_loopback(host))
    return "open (loopback)" if modes == ("local",) else ",".join(modes)


def check_exposure(settings: Settings, *, host: str, data_dir: Path) -> None:
    """Refuse to serve the run API beyond loopback without credentials.

    Raises:
        ConfigurationError: bound to a non-loopback address with ``RELAY_API_AUTH``
            unset, or with API keys only and no valid key in ``data_dir``; the message
            names the fix.
    """
    if is_loopback(host):
        return
    from functions.http.api_auth import auth_modes

    if not settings.api_auth:
        raise ConfigurationError(
            f"relay dev --host {host} would serve the run API beyond this machine with no "
            "credentials: set RELAY_API_AUTH=api_key and create a key (relay keys create "
            "--grant 'SAGA:start,read'), or RELAY_API_AUTH=jwt with RELAY_JWT_ISSUER and "
            "RELAY_JWT_AUDIENCE; RELAY_API_AUTH=public serves it open on purpose"
        )
    if auth_modes(settings) == ("api_key",):
        from infra.local.sqlite_api_keys import SQLiteApiKeyStore

        store = SQLiteApiKeyStore.from_settings(data_dir)
        try:
            valid = [k for k in store.list_keys() if not k.is_revoked]
        finally:
            store.database.close()
        if not valid:
            raise ConfigurationError(
                f"relay dev --host {host} accepts API keys only and {data_dir} holds no "
                "valid key: create one with relay keys create --grant 'SAGA:start,read' "
                "(with RELAY_DATA_DIR pointing at this data dir)"
            )


def dev_authenticator(settings: Settings, *, host: str, store: StateStore) -> Authenticator:
    """The run API's authenticator for a stack bound to ``host``, keys in ``store``'s file.

    Raises:
        ConfigurationError: the store is not SQLite, or a mode lacks its settings.
    """
    from functions.http.api_auth import authenticator_for
    from infra.local.sqlite_api_keys import SQLiteApiKeyStore
    from infra.local.sqlite_store import SQLiteStateStore

    if not isinstance(store, SQLiteStateStore):  # build_engine on RELAY_BACKEND=local
        raise ConfigurationError(f"relay dev needs the SQLite store, got {type(store)}")
    keys = SQLiteApiKeyStore(store.database)
    return authenticator_for(settings, api_keys=lambda: keys, is_loopback_dev=is_loopback(host))
