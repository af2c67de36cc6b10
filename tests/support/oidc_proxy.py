"""Google's side of an OIDC-authenticated delivery, for the emulator stack.

``TokenAuthority`` holds an RSA test key and mints ID tokens with Google's claims;
``CertsServer`` publishes its certificate as Google publishes its own (``{kid: PEM}``);
``TokenProxy`` adds a fresh token to each request and forwards it to the function, as
Cloud Tasks, Pub/Sub push and Cloud Scheduler do in production (the emulators send none).
"""

from __future__ import annotations

import datetime
import http.client
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SERVICE_ACCOUNT = "relay-invoker@relay-test.iam.gserviceaccount.com"
AUDIENCE = "https://relay-worker.test"
"""The token audience (``RELAY_TASKS_AUDIENCE``): what Terraform would set to the worker URL."""
GOOGLE_ISSUER = "https://accounts.google.com"
_HOP_HEADERS = frozenset({"host", "authorization", "content-length", "connection"})


# --- tokens ------------------------------------------------------------------------------


class TokenAuthority:
    """An RSA key with a self-signed certificate; mints Google-shaped ID tokens."""

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID
        from google.auth import crypt

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay-test-token-authority")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        self.key_id = uuid.uuid4().hex
        self.certificate_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._signer = crypt.RSASigner.from_string(  # type: ignore[no-untyped-call]
            private_pem, key_id=self.key_id
        )

    def certs(self) -> dict[str, str]:
        """``{key id: PEM certificate}``, the shape of Google's v1 certs document."""
        return {self.key_id: self.certificate_pem}

    def mint(
        self,
        *,
        audience: str = AUDIENCE,
        email: str = SERVICE_ACCOUNT,
        issuer: str = GOOGLE_ISSUER,
        lifetime_seconds: int = 3600,
    ) -> str:
        """A signed ID token as Google mints for Cloud Tasks, Pub/Sub push and Scheduler."""
        from google.auth import jwt

        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": audience,
            "sub": "1234567890",
            "email": email,
            "email_verified": True,
            "iat": now,
            "exp": now + lifetime_seconds,
        }
        token: bytes = jwt.encode(self._signer, claims)  # type: ignore[no-untyped-call]
        return token.decode()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A caller that hangs up (an emulator timing out, a test ending) is not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Server:
    """A ``ThreadingHTTPServer`` on a free port, served by a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], owner: Any) -> None:
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.httpd.owner = owner  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class CertsServer:
    """Publishes a ``TokenAuthority``'s certificate at ``url`` (``RELAY_OIDC_CERTS_URL``)."""

    def __init__(self, authority: TokenAuthority) -> None:
        self.body = json.dumps(authority.certs()).encode()
        self.fetches = 0
        self._server = _Server(_CertsHandler, self)
        self.url = f"http://127.0.0.1:{self._server.port}/oauth2/v1/certs"

    def close(self) -> None:
        """Stop serving."""
        self._server.close()


class _CertsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        owner: CertsServer = self.server.owner  # type: ignore[attr-defined]
        owner.fetches += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "public, max-age=3600")
        self.send_header("Content-Length", str(len(owner.body)))
        self.end_headers()
        self.wfile.write(owner.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


# --- the proxy ---------------------------------------------------------------------------


@dataclass
class ProxyCounters:
    """What the proxy did: requests, forwarded duplicates, answers by status."""

    requests: int = 0
    duplicates: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, status: int, *, is_duplicate: bool = False) -> None:
        with self.lock:
            if is_duplicate:
                self.duplicates += 1
            else:
                self.requests += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1


class TokenProxy:
    """Adds ``Authorization: Bearer <minted ID token>`` and forwards to the function.

    Args:
        authority: Signs the tokens.
        target_port: The function server's port on 127.0.0.1.
        duplicate_probability: Chance that a request is also forwarded a second time,
            concurrently (the caller gets the first answer), as at-least-once queues do.
        seed: For the duplicate choices.
    """

    def __init__(
        self,
        authority: TokenAuthority,
        *,
        target_port: int,
        duplicate_probability: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.authority = authority
        self.target_port = target_port
        self.duplicate_probability = duplicate_probability
        self.counters = ProxyCounters()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._server = _Server(_ProxyHandler, self)
        self.url = f"http://127.0.0.1:{self._server.port}"

    def close(self) -> None:
        """Stop forwarding."""
        self._server.close()

    def is_duplicated(self) -> bool:
        with self._rng_lock:
            return self._rng.random() < self.duplicate_probability

    def forward(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One forwarded request with a fresh token; 502 when the function is down."""
        outgoing = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
        outgoing["Authorization"] = f"Bearer {self.authority.mint()}"
        connection = http.client.HTTPConnection("127.0.0.1", self.target_port, timeout=120)
        try:
            connection.request(method, path, body=body, headers=outgoing)
            response = connection.getresponse()
            payload = response.read()
            kept = [
                (k, v)
                for k, v in response.getheaders()
                if k.lower() in ("content-type", "retry-after", "location")
            ]
            return response.status, kept, payload
        except (OSError, http.client.HTTPException) as exc:
            message = json.dumps({"error": "bad_gateway", "message": str(exc)}).encode()
            return 502, [("Content-Type", "application/json")], message
        finally:
            connection.close()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        owner: TokenProxy = self.server.owner  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items()}
        if owner.is_duplicated():

            def again() -> None:
                status, _, _ = owner.forward("POST", self.path, body, headers)
                owner.counters.count(status, is_duplicate=True)

            threading.Thread(target=again, daemon=True).start()
        status, response_headers, payload = owner.forward("POST", self.path, body, headers)
        owner.counters.count(status)
        self.send_response(status)
        for key, value in response_headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass
