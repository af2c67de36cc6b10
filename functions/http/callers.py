"""Who calls the run API, and which sagas they may start and read.

Every public request (start, read, list) is authenticated by the ``Authenticator`` of the
host into a :class:`Caller`, whose :class:`Grants` the handlers check per saga.
``RELAY_API_AUTH`` chooses the authenticators (``functions/http/api_auth.py``):

* ``api_key``: ``Authorization: Bearer rk_<id>_<secret>`` or ``X-Api-Key``, checked
  against the ``ApiKeyStore`` (sha256 of the secret, constant-time comparison);
* ``jwt``: a bearer JWT from a configured OIDC issuer (``functions/http/jwt_auth.py``);
* ``platform``: the platform checked the caller already (Cloud Run IAM, an API Gateway
  IAM or JWT authorizer); the identity it verified is read for the audit only and the
  grants come from ``RELAY_PLATFORM_GRANTS``;
* ``public``: everyone, anonymously, with every grant (an explicit opt-out, warned about).

``api_key`` and ``jwt`` combine (``api_key,jwt``). No credential is a 401; a credential
that is malformed, unknown, revoked, expired or wrong is a 403, never a 5xx; no
credential text reaches a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from core.errors import ConfigurationError
from functions.http.auth import Forbidden, Unauthenticated

if TYPE_CHECKING:
    from core.ports.api_keys import ApiKeyStore

log = logging.getLogger("relay.http.auth")

Action = Literal["start", "read"]
CallerKind = Literal["anonymous", "api_key", "jwt", "platform", "local"]
ACTIONS: Final[frozenset[str]] = frozenset({"start", "read"})
WILDCARD: Final = "*"
MAX_CREDENTIAL_CHARS: Final = 8192
API_KEY_HEADER: Final = "X-Api-Key"
_TOKEN68: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


# -- grants ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grants:
    """What a caller may do: per saga name (or ``*``, every saga), ``start`` and/or ``read``.

    Written as ``saga:start,read;other:read;*:read`` (``*`` as the action: both).
    """

    rules: tuple[tuple[str, frozenset[str]], ...] = ()

    @classmethod
    def parse(cls, text: str, *, what: str = "grants") -> Grants:
        """The grants written in ``text``.

        Raises:
            ValueError: ``text`` is malformed; the message names ``what`` and the entry.
        """
        rules: dict[str, set[str]] = {}
        for raw in text.split(";"):
            entry = raw.strip()
            if not entry:
                continue
            saga, colon, actions_text = entry.partition(":")
            saga = saga.strip()
            if not colon or not (saga == WILDCARD or _is_saga_name(saga)):
                raise ValueError(
                    f"{what}: entry {entry[:60]!r} must look like saga:start,read "
                    "(saga a name or *, actions start and/or read or *)"
                )
            actions = {a.strip() for a in actions_text.split(",") if a.strip()}
            if WILDCARD in actions:
                actions = (actions - {WILDCARD}) | ACTIONS
            unknown = sorted(actions - ACTIONS)
            if unknown or not actions:
                raise ValueError(
                    f"{what}: entry {entry[:60]!r} names no action or unknown ones "
                    f"{unknown}; use start, read or *"
                )
            rules.setdefault(saga, set()).update(actions)
        return cls(tuple(sorted((saga, frozenset(acts)) for saga, acts in rules.items())))

    @classmethod
    def everything(cls) -> Grants:
        """Every action on every saga (``*:start,read``)."""
        return cls(((WILDCARD, ACTIONS),))

    def may(self, action: str, saga: str) -> bool:
        """True when ``action`` (``start`` or ``read``) on saga ``saga`` is granted."""
        return any(action in actions and name in (WILDCARD, saga) for name, actions in self.rules)

    def readable_sagas(self) -> frozenset[str] | None:
        """The sagas the caller may read; None when it may read every saga."""
        readable = frozenset(name for name, actions in self.rules if "read" in actions)
        return None if WILDCARD in readable else readable

    def text(self) -> str:
        """The grants in their written form (sorted; ``relay keys list`` shows it)."""
        return ";".join(f"{saga}:{','.join(sorted(acts))}" for saga, acts in self.rules)


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller of the run API.

    Attributes:
        identity: Who, for audit and logs (``api_key:<id>``, ``jwt:<sub>``,
            ``gcp:<email>``, ``aws:<arn>``, ``local``, ``anonymous``); never a secret.
        kind: How the identity was established.
        grants: What the caller may do.
        source: The client address the request came from.
    """

    identity: str
    kind: CallerKind
    grants: Grants
    source: str


@dataclass(frozen=True, slots=True)
class CallerRequest:
    """What an authenticator sees of a request: headers, client address, ASGI scope."""

    headers: Mapping[str, str]
    source: str
    scope: Mapping[str, Any]


class Authenticator(Protocol):
    """Turns a run API request into a ``Caller``; changes nothing, logs no secret."""

    def authenticate(self, request: CallerRequest) -> Caller:
        """The caller of ``request``.

        Raises:
            Unauthenticated: no credential was presented (HTTP 401).
            Forbidden: the credential is malformed, unknown, revoked or wrong (HTTP 403).
        """
        ...


class CredentialCheck(Protocol):
    """One kind of credential within a ``CredentialChain``."""

    challenge: str

    def check(self, request: CallerRequest) -> Caller | None:
        """The caller when the request carries this kind of credential, else None.

        Raises:
            Forbidden: a credential of this kind is present and does not check out.
        """
        ...


# -- authenticators ----------------------------------------------------------------------


class OpenAuthenticator:
    """Everyone may do everything: ``relay dev`` on loopback (``local``) or ``public``."""

    def __init__(self, kind: Literal["local", "anonymous"]) -> None:
        self._kind: Literal["local", "anonymous"] = kind
        self._grants = Grants.everything()

    def authenticate(self, request: CallerRequest) -> Caller:
        """A caller named after the mode, with every grant."""
        return Caller(self._kind, self._kind, self._grants, request.source)


class CredentialChain:
    """Tries each credential check in turn (``api_key``, ``jwt``).

    The first check that recognises a credential decides. A request with none is a
    401; one whose ``Authorization`` header no check recognises is a 403.
    """

    def __init__(self, checks: Sequence[CredentialCheck]) -> None:
        if not checks:
            raise ConfigurationError("RELAY_API_AUTH names no credential kind")
        self._checks = tuple(checks)

    def authenticate(self, request: CallerRequest) -> Caller:
        """The caller the first recognised credential names.

        Raises:
            Unauthenticated: no credential at all.
            Forbidden: a credential is present but malformed, unknown or wrong.
        """
        for check in self._checks:
            caller = check.check(request)
            if caller is not None:
                return caller
        if header(request.headers, "Authorization") is not None:
            raise Forbidden("the Authorization header holds no credential this API accepts")
        raise Unauthenticated(
            "the run API needs a credential", challenge=", ".join(c.challenge for c in self._checks)
        )


class ApiKeyCheck:
    """``Authorization: Bearer rk_...`` or ``X-Api-Key: rk_...`` against an ``ApiKeyStore``.

    Args:
        store: Returns the key store (built on first use, not at import).
    """

    challenge = f'Bearer realm="relay", ApiKey header="{API_KEY_HEADER}"'

    def __init__(self, store: Callable[[], ApiKeyStore]) -> None:
        self._store = store

    def check(self, request: CallerRequest) -> Caller | None:
        """The key's caller; None without an API key in the request.

        Raises:
            Forbidden: the key is malformed, unknown, wrong, revoked or its grants unreadable.
        """
        from core.ports.api_keys import KEY_PREFIX, secret_digest, split_key_text

        text = header(request.headers, API_KEY_HEADER)
        if text is None:
            token = bearer_token(request.headers)
            if token is None or not token.startswith(KEY_PREFIX):
                return None
            text = token
        parts = split_key_text(text.strip()) if _is_clean(text) else None
        if parts is None:
            raise Forbidden("malformed API key (expected rk_<id>_<secret>)")
        key_id, secret = parts
        record = self._store().load_key(key_id=key_id)
        if record is None:
            secret_digest(secret)  # about the same work as a wrong secret
            raise Forbidden(f"unknown or wrong API key (id {key_id})")
        if not record.matches(secret):
            raise Forbidden(f"unknown or wrong API key (id {key_id})")
        if record.is_revoked:
            raise Forbidden(f"API key {key_id} was revoked")
        try:
            grants = Grants.parse(record.grants, what=f"API key {key_id}")
        except ValueError:
            log.error("API key %s has unreadable grants; refusing it", key_id)
            raise Forbidden(f"API key {key_id} has unreadable grants") from None
        return Caller(f"api_key:{key_id}", "api_key", grants, request.source)


class PlatformAuthenticator:
    """The platform authenticated the caller (Cloud Run IAM; API Gateway IAM or JWT).

    The identity is read for the audit only, without verifying again: on GCP the email
    claim of the Google ID token Cloud Run already checked, on AWS the authorizer
    context API Gateway put in the Lambda event. Grants are ``RELAY_PLATFORM_GRANTS``.

    Args:
        cloud: ``gcp`` or ``aws``.
        grants: What every caller the platform let through may do.
    """

    def __init__(self, cloud: Literal["gcp", "aws"], grants: Grants) -> None:
        self._cloud = cloud
        self._grants = grants

    def authenticate(self, request: CallerRequest) -> Caller:
        """A platform caller named by the platform's own verification."""
        if self._cloud == "gcp":
            identity = f"gcp:{_google_email(request.headers) or 'unknown'}"
        else:
            identity = f"aws:{_aws_principal(request.scope) or 'unknown'}"
        return Caller(clip(identity), "platform", self._grants, request.source)


class LazyAuthenticator:
    """Delegates to the authenticator ``current()`` returns, asked per request.

    A function's import then reads no settings, and ``current`` (typically
    ``functions.wiring.get_authenticator``, which caches it per warm container and drops
    it with ``reset_engine``) decides when one is built.
    """

    def __init__(self, current: Callable[[], Authenticator]) -> None:
        self._current = current

    def authenticate(self, request: CallerRequest) -> Caller:
        """The caller, as the current authenticator names it."""
        return self._current().authenticate(request)


# -- parsing helpers ---------------------------------------------------------------------


def header(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]``, compared case-insensitively."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None without a bearer header.

    Raises:
        Forbidden: the header says Bearer but its token is malformed (non-ASCII,
            over-long, with spaces...).
    """
    value = header(headers, "Authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if not _is_clean(token) or not _TOKEN68.fullmatch(token):
        raise Forbidden("malformed bearer token")
    return token


def clip(text: str, limit: int = 200) -> str:
    """``text`` printable and at most ``limit`` characters (identities reach logs)."""
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


def _is_saga_name(text: str) -> bool:
    # Printable ASCII without the grant syntax's own characters (":;,*") or spaces.
    return 0 < len(text) <= 200 and all(
        c.isascii() and c.isprintable() and not c.isspace() and c not in ":;,*" for c in text
    )


def _is_clean(text: str) -> bool:
    return bool(text) and len(text) <= MAX_CREDENTIAL_CHARS and text.isascii()


def _google_email(headers: Mapping[str, str]) -> str | None:
    """The email claim of the Google ID token Cloud Run IAM verified (read, not verified).

    Cloud Run passes ``Authorization`` (or ``X-Serverless-Authorization``, minus its
    signature) on after checking it; anything odd just leaves the identity unknown: the
    request was already let through.
    """
    try:
        token = bearer_token(headers)
        if token is None:  # the header Cloud Run also accepts (it strips the signature)
            served = header(headers, "X-Serverless-Authorization")
            token = bearer_token({"Authorization": served}) if served else None
    except Forbidden:
        return None
    if token is None or token.count(".") != 2:
        return None
    try:
        segment = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return None
    email = claims.get("email") if isinstance(claims, dict) else None
    return email if isinstance(email, str) and email else None


def _aws_principal(scope: Mapping[str, Any]) -> str | None:
    """The caller API Gateway's authorizer verified (Mangum's ``aws.event``), if any."""
    event = scope.get("aws.event")
    context = event.get("requestContext") if isinstance(event, Mapping) else None
    authorizer = context.get("authorizer") if isinstance(context, Mapping) else None
    if not isinstance(authorizer, Mapping):
        return None
    iam = authorizer.get("iam")
    if isinstance(iam, Mapping) and isinstance(iam.get("userArn"), str):
        return f"iam:{iam['userArn']}"
    jwt = authorizer.get("jwt")
    claims = jwt.get("claims") if isinstance(jwt, Mapping) else None
    if isinstance(claims, Mapping):
        for name in ("email", "sub", "client_id"):
            if isinstance(claims.get(name), str):
                return f"jwt:{claims[name]}"
    return None
