"""Signature scheme v2 (core.signing) and the replay cache of HmacVerifier."""

from __future__ import annotations

import contextlib
import re
import threading

import pytest

from core import signing
from core.signing import MemoryNonceStore, SignatureError, parse, sign, verify
from functions.http.auth import Forbidden, HmacVerifier, Unauthenticated

KEY = b"unit-test-key-0123456789"
NOW = 1_700_000_000.0
NONCE = "abcdefghijklmnopqrstuv"


def signed_header(**overrides: object) -> str:
    request: dict[str, object] = {
        "method": "POST",
        "path": "/v1/steps",
        "body": b"{}",
        "key": KEY,
        "now": NOW,
        "nonce": NONCE,
    }
    request.update(overrides)
    return sign(**request)  # type: ignore[arg-type]


def check(header: str | None, **overrides: object) -> signing.Signature:
    request: dict[str, object] = {
        "method": "POST",
        "path": "/v1/steps",
        "body": b"{}",
        "key": KEY,
        "now": NOW,
    }
    request.update(overrides)
    return verify(header, **request)  # type: ignore[arg-type]


def test_signature_has_the_v2_shape_and_verifies() -> None:
    """A signature is t=<unix>,n=<nonce>,v2=<64 hex> and verifies for the same request."""
    header = signed_header()

    assert re.fullmatch(r"t=1700000000,n=abcdefghijklmnopqrstuv,v2=[0-9a-f]{64}", header)
    assert check(header).nonce == NONCE


def test_each_signature_gets_a_fresh_nonce() -> None:
    """Without an explicit nonce, two signatures of the same request differ."""
    first = sign(method="POST", path="/v1/steps", body=b"", key=KEY)
    second = sign(method="POST", path="/v1/steps", body=b"", key=KEY)

    assert parse(first).nonce != parse(second).nonce


@pytest.mark.parametrize(
    "request_change",
    [
        {"method": "PUT"},
        {"path": "/v1/sweep"},
        {"path": "/v1/steps?x=1"},
        {"body": b"{} "},
        {"key": b"another-key"},
    ],
    ids=["method", "path", "query", "body", "key"],
)
def test_signature_is_bound_to_method_path_query_body_and_key(
    request_change: dict[str, object],
) -> None:
    """Changing any signed part of the request breaks the signature."""
    with pytest.raises(SignatureError, match="does not match"):
        check(signed_header(), **request_change)


def test_method_is_compared_case_insensitively() -> None:
    """The method is upper-cased on both ends."""
    check(signed_header(method="post"), method="POST")


@pytest.mark.parametrize(
    ("age_seconds", "accepted"),
    [(0, True), (60, True), (61, False), (-5, True), (-6, False), (-3600, False)],
)
def test_window_is_60_seconds_past_and_5_seconds_future(age_seconds: int, accepted: bool) -> None:
    """Signatures are accepted from 60 s old to 5 s ahead of the verifier's clock."""
    header = signed_header(now=NOW - age_seconds)
    if accepted:
        check(header)
    else:
        with pytest.raises(SignatureError, match=r"too old|future"):
            check(header)


def test_v1_signatures_are_refused_saying_so() -> None:
    """The old scheme (timestamp and body only) is refused by name."""
    with pytest.raises(SignatureError, match="v1 is no longer accepted"):
        check(f"t={int(NOW)},v1={'0' * 64}")


JUNK_HEADERS = [
    "",
    "not a signature",
    "t=²,n=abcdefghijklmnopqrstuv,v2=" + "0" * 64,  # passes str.isdigit, fails int()
    "t=\u0661\u0667" + "\u0660" * 8 + ",n=abcdefghijklmnopqrstuv,v2=" + "0" * 64,  # Arabic-Indic
    "t=1700000000,n=abcdefghijklmnopqrstuv,v2=" + "é" * 64,  # non-ASCII digest
    "t=1700000000,n=abcdefghijklmnopqrstuv,v2=" + "g" * 64,  # not hex
    "t=1700000000,n=abcdefghijklmnopqrstuv,v2=" + "A" * 64,  # upper-case hex
    "t=1700000000,n=abcdefghijklmnopqrstuv,v2=" + "0" * 63,  # short digest
    "t=1700000000,t=1700000000,n=abcdefghijklmnopqrstuv,v2=" + "0" * 64,  # repeated part
    "t=1700000000,n=abcdefghijklmnopqrstuv,v2=" + "0" * 64 + ",x=1",  # unknown part
    "t=1700000000,n=short,v2=" + "0" * 64,  # nonce too short
    "t=1700000000,n=abc def ghi jkl mno,v2=" + "0" * 64,  # nonce with spaces
    "t=-1700000000,n=abcdefghijklmnopqrstuv,v2=" + "0" * 64,  # signed number
    "t=1e9,n=abcdefghijklmnopqrstuv,v2=" + "0" * 64,
    "t=" + "9" * 400 + ",n=abcdefghijklmnopqrstuv,v2=" + "0" * 64,  # huge number
    "t=1700000000,n=abcdefghijklmnopqrstuv,v2=" + "0" * 64 + "," * 300,  # over-long
    "t=1700000000\x00,n=abcdefghijklmnopqrstuv,v2=" + "0" * 64,  # NUL
    "n=abcdefghijklmnopqrstuv,v2=" + "0" * 64,  # no time
    "t=1700000000,v2=" + "0" * 64,  # no nonce
    "t=1700000000,n=abcdefghijklmnopqrstuv",  # no digest
    "t=1700000000,n=abcdefghijklmnopqrstuv,v2",  # part without '='
]


@pytest.mark.parametrize("header", JUNK_HEADERS, ids=range(len(JUNK_HEADERS)))
def test_junk_headers_raise_signature_error_and_nothing_else(header: str) -> None:
    """Malformed headers (non-ASCII digits, bad digests, repeats, overlong) are SignatureErrors."""
    with pytest.raises(SignatureError):
        check(header)


def test_messages_never_echo_the_expected_digest() -> None:
    """A mismatch says so without revealing what would have matched."""
    good = signed_header()
    bad = good[: -len("0" * 64)] + "0" * 64

    with pytest.raises(SignatureError) as caught:
        check(bad)

    assert good.rsplit("=", 1)[1] not in str(caught.value)


# -- the verifier's nonce cache ---------------------------------------------------------


def hmac_headers(**overrides: object) -> dict[str, str]:
    return {signing.SIGNATURE_HEADER: signed_header(**overrides)}


def verify_with(verifier: HmacVerifier, headers: dict[str, str]) -> str:
    return verifier.verify(method="POST", path="/v1/steps", body=b"{}", headers=headers)


def test_a_signature_passes_once() -> None:
    """The second presentation of the same signature is a replay (403)."""
    verifier = HmacVerifier(KEY, clock=lambda: NOW)
    headers = hmac_headers()

    assert verify_with(verifier, headers) == "hmac:local"
    with pytest.raises(Forbidden, match="already used"):
        verify_with(verifier, headers)


def test_a_fresh_signature_of_the_same_request_passes() -> None:
    """Re-signing (what the dispatcher does per attempt) is not a replay."""
    verifier = HmacVerifier(KEY, clock=lambda: NOW)

    verify_with(verifier, hmac_headers(nonce="a" * 22))
    verify_with(verifier, hmac_headers(nonce="b" * 22))


def test_a_rejected_signature_does_not_use_up_its_nonce() -> None:
    """Only verified signatures are remembered, so a forger cannot burn nonces."""
    verifier = HmacVerifier(KEY, clock=lambda: NOW)
    with pytest.raises(Forbidden):
        verify_with(verifier, hmac_headers(key=b"not-the-key"))

    verify_with(verifier, hmac_headers())


def test_missing_header_is_unauthenticated() -> None:
    """No signature header at all is a 401 with a challenge."""
    with pytest.raises(Unauthenticated):
        verify_with(HmacVerifier(KEY, clock=lambda: NOW), {})


def test_nonces_expire_with_the_window_and_the_cache_stays_bounded() -> None:
    """Entries leave once their signature could no longer pass; a full cache refuses."""
    cache = MemoryNonceStore(capacity=2)
    cache.remember("n1", expires_at=100.0, now=0.0)
    cache.remember("n2", expires_at=200.0, now=0.0)
    with pytest.raises(SignatureError, match="too many"):
        cache.remember("n3", expires_at=300.0, now=50.0)

    cache.remember("n3", expires_at=300.0, now=150.0)  # n1 expired and was dropped

    assert len(cache) == 2
    with pytest.raises(SignatureError, match="already used"):
        cache.remember("n2", expires_at=200.0, now=150.0)


def test_concurrent_replays_let_exactly_one_through() -> None:
    """Many threads presenting one signature at once: exactly one is accepted."""
    verifier = HmacVerifier(KEY, clock=lambda: NOW)
    headers = hmac_headers()
    accepted: list[str] = []
    barrier = threading.Barrier(16)

    def present() -> None:
        barrier.wait()
        with contextlib.suppress(Forbidden):
            accepted.append(verify_with(verifier, headers))

    threads = [threading.Thread(target=present) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert accepted == ["hmac:local"]


def test_repr_does_not_show_the_key() -> None:
    """The key never reaches a log line through repr."""
    assert KEY.decode() not in repr(HmacVerifier(KEY))
