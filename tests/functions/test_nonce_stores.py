"""Nonce stores: a signature passes once, in one process or across the local processes.

The same behaviour is asked of the in-memory store and of the SQLite store that
``relay dev`` shares with its worker processes; the SQLite one is also checked across
two real processes and through ``verifier_for``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.errors import StoreUnavailable
from core.signing import SIGNATURE_HEADER, MemoryNonceStore, NonceStore, SignatureError, sign
from functions.http.auth import Forbidden, HmacVerifier
from functions.http.verifiers import verifier_for
from functions.settings import Settings
from infra.local.sqlite_nonces import NONCES_FILE_NAME, SQLiteNonceStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., NonceStore]]:
    """Builds a store of each kind (SQLite ones on one file in tmp_path)."""
    opened: list[SQLiteNonceStore] = []

    def build(capacity: int = 1000) -> NonceStore:
        if request.param == "memory":
            return MemoryNonceStore(capacity=capacity)
        store = SQLiteNonceStore(tmp_path / NONCES_FILE_NAME, capacity=capacity)
        opened.append(store)
        return store

    yield build
    for store in opened:
        store.close()


def test_a_nonce_is_accepted_once(make_store: Callable[..., NonceStore]) -> None:
    """The second use of a nonce is a replay."""
    store = make_store()
    store.remember("nonce-a", expires_at=100.0, now=0.0)

    with pytest.raises(SignatureError, match="already used"):
        store.remember("nonce-a", expires_at=100.0, now=1.0)
    store.remember("nonce-b", expires_at=100.0, now=1.0)


def test_a_full_store_refuses_until_entries_expire(make_store: Callable[..., NonceStore]) -> None:
    """A full store refuses new nonces (never forgets live ones); expiry makes room."""
    store = make_store(capacity=1)
    store.remember("nonce-a", expires_at=100.0, now=0.0)

    with pytest.raises(SignatureError, match="too many"):
        store.remember("nonce-b", expires_at=150.0, now=50.0)
    store.remember("nonce-b", expires_at=250.0, now=101.0)


def test_sqlite_stores_on_one_file_share_their_nonces(tmp_path: Path) -> None:
    """Two stores on the same file (two processes' worth) refuse each other's nonces."""
    first = SQLiteNonceStore(tmp_path / NONCES_FILE_NAME)
    second = SQLiteNonceStore(tmp_path / NONCES_FILE_NAME)
    try:
        first.remember("shared", expires_at=time.time() + 60, now=time.time())
        with pytest.raises(SignatureError, match="already used"):
            second.remember("shared", expires_at=time.time() + 60, now=time.time())
    finally:
        first.close()
        second.close()
    assert (tmp_path / NONCES_FILE_NAME).stat().st_mode & 0o077 == 0


def test_a_nonce_used_in_another_process_is_refused_here(tmp_path: Path) -> None:
    """A worker process accepted a signature: this process refuses the same one."""
    path = tmp_path / NONCES_FILE_NAME
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from infra.local.sqlite_nonces import SQLiteNonceStore\n"
        "store = SQLiteNonceStore(Path(sys.argv[1]))\n"
        "store.remember('from-the-worker', expires_at=time.time() + 60, now=time.time())\n"
        "store.close()\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, cwd=ROOT, timeout=60)

    store = SQLiteNonceStore(path)
    try:
        with pytest.raises(SignatureError, match="already used"):
            store.remember("from-the-worker", expires_at=time.time() + 60, now=time.time())
    finally:
        store.close()


def test_local_verifiers_of_one_data_dir_refuse_each_others_replays(tmp_path: Path) -> None:
    """verifier_for on RELAY_BACKEND=local shares nonces through the data dir."""
    settings = Settings(backend="local", data_dir=tmp_path / "data", signing_key="k" * 32)
    api, worker = verifier_for(settings), verifier_for(settings)
    assert isinstance(api, HmacVerifier)
    path = "/v1/runs/r-1/cancel"
    headers = {SIGNATURE_HEADER: sign(method="POST", path=path, body=b"", key=b"k" * 32)}

    assert api.verify(method="POST", path=path, body=b"", headers=headers) == "hmac:local"
    with pytest.raises(Forbidden, match="already used"):
        worker.verify(method="POST", path=path, body=b"", headers=headers)


def test_a_broken_nonce_file_defers_instead_of_letting_through(tmp_path: Path) -> None:
    """A store that cannot write raises StoreUnavailable (a 503), never accepts silently."""
    store = SQLiteNonceStore(tmp_path / NONCES_FILE_NAME)
    store.close()

    with pytest.raises(StoreUnavailable, match="nonce store"):
        store.remember("n", expires_at=time.time() + 60, now=time.time())
