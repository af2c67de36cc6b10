"""The ApiKeyStore contract, run against every registered adapter (memory, SQLite,
Firestore on its emulator, DynamoDB on moto server)."""

from __future__ import annotations

import threading

import pytest

from core.ports.api_keys import (
    ApiKeyRecord,
    ApiKeyStore,
    DuplicateApiKeyError,
    issue_key,
    split_key_text,
)

T0 = 1_700_000_000.0


def record(
    key_id: str, *, created_at: float = T0, grants: str = "order:start,read"
) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=key_id,
        secret_sha256="ab" * 32,
        grants=grants,
        description=f"key {key_id}",
        created_at=created_at,
    )


def test_a_created_key_loads_back_equal(api_key_store: ApiKeyStore) -> None:
    """Every field of a created key round-trips; an unknown id loads as None."""
    issued = issue_key(grants="order:read;*:start", description="CI deploys", now=T0 + 0.25)

    api_key_store.create_key(record=issued.record)

    assert api_key_store.load_key(key_id=issued.record.key_id) == issued.record
    assert api_key_store.load_key(key_id="000000000000") is None


def test_only_the_digest_of_the_secret_is_stored(api_key_store: ApiKeyStore) -> None:
    """The stored record matches the key's secret by digest and never holds the secret."""
    issued = issue_key(grants="*:read", description="", now=T0)
    parts = split_key_text(issued.text)
    assert parts is not None
    key_id, secret = parts

    api_key_store.create_key(record=issued.record)
    stored = api_key_store.load_key(key_id=key_id)

    assert stored is not None and stored.matches(secret)
    assert not stored.matches(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert secret not in repr(stored)


def test_a_key_id_names_one_key_forever(api_key_store: ApiKeyStore) -> None:
    """Creating a second key with a stored id raises and leaves the first untouched."""
    first = record("aaaaaaaaaaaa")
    api_key_store.create_key(record=first)

    with pytest.raises(DuplicateApiKeyError):
        api_key_store.create_key(record=record("aaaaaaaaaaaa", grants="*:start,read"))

    assert api_key_store.load_key(key_id="aaaaaaaaaaaa") == first


def test_concurrent_creates_of_one_id_have_one_winner(api_key_store: ApiKeyStore) -> None:
    """Two racing creates of the same id: exactly one succeeds."""
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def create(grants: str) -> None:
        barrier.wait()
        try:
            api_key_store.create_key(record=record("bbbbbbbbbbbb", grants=grants))
            outcomes.append("created")
        except DuplicateApiKeyError:
            outcomes.append("duplicate")

    threads = [threading.Thread(target=create, args=(g,)) for g in ("a:read", "b:read")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["created", "duplicate"]


def test_keys_are_listed_oldest_first_revoked_included(api_key_store: ApiKeyStore) -> None:
    """list_keys returns every key by creation time, revoked keys too."""
    for key_id, created_at in (
        ("cccccccccccc", T0 + 2),
        ("dddddddddddd", T0),
        ("eeeeeeeeeeee", T0 + 1),
    ):
        api_key_store.create_key(record=record(key_id, created_at=created_at))
    api_key_store.revoke_key(key_id="cccccccccccc", now=T0 + 5)

    listed = api_key_store.list_keys()

    assert [k.key_id for k in listed] == ["dddddddddddd", "eeeeeeeeeeee", "cccccccccccc"]
    assert [k.is_revoked for k in listed] == [False, False, True]


def test_revoking_keeps_the_first_revocation_time(api_key_store: ApiKeyStore) -> None:
    """A revoked key stays revoked at its first time; a missing key revokes to None."""
    api_key_store.create_key(record=record("ffffffffffff"))

    first = api_key_store.revoke_key(key_id="ffffffffffff", now=T0 + 10)
    again = api_key_store.revoke_key(key_id="ffffffffffff", now=T0 + 20)

    assert first is not None and first.revoked_at == T0 + 10
    assert again is not None and again.revoked_at == T0 + 10
    loaded = api_key_store.load_key(key_id="ffffffffffff")
    assert loaded is not None and loaded.revoked_at == T0 + 10 and loaded.is_revoked
    assert api_key_store.revoke_key(key_id="000000000000", now=T0) is None


@pytest.mark.parametrize("key_id", ["", "a/b", "../x", "__x__", "é" * 3, "k" * 300])
def test_odd_key_ids_load_as_missing(api_key_store: ApiKeyStore, key_id: str) -> None:
    """An id no key can have (it comes from a request header) is just not found."""
    assert api_key_store.load_key(key_id=key_id) is None
