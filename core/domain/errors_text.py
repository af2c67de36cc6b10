"""What a failure may say, and to whom: the public error text and the redacted detail.

A step's exception text is written by whoever wrote the step (or a library it called) and
may carry anything: a payment token, a customer's email, a bearer token from a failed HTTP
call. Issue 10 (finding 6) found the demo's own ``PaymentDeclined`` putting the token in
the public ``run.error``. So every failure has two texts:

- ``public``: ``"<code>: <message>"``, where the code is the exception's class name and the
  message is generic, unless the exception opts in to a public message: a non-empty
  ``public_message`` attribute (class or instance), as ``NonRetryableStepError(...,
  public_message=...)`` sets it. A plain ``Failure(value)`` is a deliberate business
  outcome and says what the step author wrote.
- ``detail``: the full text (``"<code>: <str(exc)>"``), kept for readers allowed to see
  the run and for logs.

Both go through a ``Redactor`` before they are stored or logged: the values of input
fields whose names look secret (token, secret, password, card, api_key, authorization, ...),
every pydantic ``SecretStr``/``SecretBytes`` value, and common credential shapes (bearer
and basic credentials, JWTs, ``name=value`` pairs with secret-looking names, URL
passwords, private-key blocks, AWS access key ids, ``sk_live_``-style and Relay API keys,
card numbers that pass the Luhn check) become ``[redacted]``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

REDACTED: Final = "[redacted]"
"""What a secret is replaced with."""

WITHHELD: Final = "details withheld; see error_detail"
"""The generic public message of an exception that does not opt in to a public one."""

SECRET_NAME: Final = re.compile(
    r"token|secret|passw(?:or)?d|passphrase|card|cvc|cvv|api[_-]?key|access[_-]?key"
    r"|private[_-]?key|authori[sz]ation|credential|cookie|session[_-]?id",
    re.IGNORECASE,
)
"""A field or parameter name whose value is treated as secret."""

MAX_PUBLIC_CHARS: Final = 2_000
"""The longest public error kept (an exception may carry megabytes of text)."""

MAX_DETAIL_CHARS: Final = 16_000
"""The longest error detail kept: records stay far below DynamoDB's 400 KB item limit."""

MAX_DEPTH: Final = 32
"""How deep ``secret_values`` walks an input (deeper values are not searched)."""

MIN_SECRET_LENGTH: Final = 4
"""Shorter input values are not searched for (``"1"`` would redact every digit)."""

_NAME = r"[A-Za-z0-9_.-]*(?:" + SECRET_NAME.pattern + r")[A-Za-z0-9_.-]*"
_PRIVATE_KEY = r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"
_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(_PRIVATE_KEY, re.S), REDACTED),
    # A whole credential header, scheme and all: "Authorization: Basic dXNlcjpwYXNz".
    (
        re.compile(r"""(?i)(\b(?:proxy-)?authori[sz]ation["']?\s*[:=]\s*["']?)[^\r\n"',})\]]+"""),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1{REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    # name=value / name: value / 'name': 'value' with a secret-looking name.
    (
        re.compile(
            rf"""(?i)(["']?\b{_NAME}["']?\s*[:=]\s*["']?)(?!\[redacted\])([^\s"',;&}}\])]+)"""
        ),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(://[^/\s:@]+:)([^@\s/]+)(@)"), rf"\1{REDACTED}\3"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{8,}\b"), REDACTED),
    (re.compile(r"\brk_[A-Za-z0-9]{4,}_[A-Za-z0-9_-]{8,}"), REDACTED),
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|xox[abpr]-[A-Za-z0-9-]{10,})"), REDACTED),
)
_CARD_NUMBER: Final = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")


@dataclass(frozen=True, slots=True)
class ErrorText:
    """One failure in two texts: what every reader sees, and the full (redacted) detail."""

    public: str
    detail: str

    @classmethod
    def same(cls, text: str) -> ErrorText:
        """A failure the engine itself words (a timeout, a lost lease): nothing to withhold."""
        return cls(text, text)

    def redacted(self, redactor: Redactor) -> ErrorText:
        """Both texts with ``redactor``'s secrets removed."""
        return ErrorText(redactor.redact(self.public), redactor.redact(self.detail))


def public_message_of(exc: BaseException) -> str | None:
    """The message ``exc`` declares safe for every reader, if it declares one."""
    message = getattr(exc, "public_message", None)
    return message if isinstance(message, str) and message else None


def describe_exception(exc: BaseException) -> ErrorText:
    """The public and the full text of an exception raised by step code (not redacted)."""
    code = type(exc).__name__
    text = str(exc)
    detail = f"{code}: {text}" if text else code
    public = public_message_of(exc)
    return ErrorText(f"{code}: {public or WITHHELD}", detail)


def describe_failure_value(value: object) -> ErrorText:
    """The texts of ``Failure(value)`` with a plain value: the step author's own wording."""
    return ErrorText.same(str(value))


class Redactor:
    """Removes known secret values and credential-shaped text from error text.

    Build one per run with ``for_values(run input, parsed input, ...)``; ``redact`` is
    also safe with no values (patterns only), for text with no run at hand.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Iterable[str] = ()) -> None:
        unique = {v for v in values if len(v) >= MIN_SECRET_LENGTH}
        self._values = tuple(sorted(unique, key=len, reverse=True))

    @classmethod
    def for_values(cls, *sources: object) -> Redactor:
        """A redactor for the secrets found in ``sources`` (JSON values, pydantic models)."""
        return cls(value for source in sources for value in secret_values(source))

    def redact_bounded(self, text: str, limit: int) -> str:
        """``redact(text)`` cut to ``limit`` characters, saying how much was cut.

        Only a bounded prefix is searched, so a huge message costs bounded time.
        """
        redacted = self.redact(text[: limit * 4])
        if len(redacted) <= limit and len(text) <= limit * 4:
            return redacted
        return f"{redacted[: limit - 40]}… [{len(text) - (limit - 40)} more characters]"

    def redact(self, text: str) -> str:
        """``text`` with every secret value and credential pattern replaced."""
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return _CARD_NUMBER.sub(_redact_card_number, text)


def _redact_card_number(match: re.Match[str]) -> str:
    digits = [int(c) for c in match.group(0) if c.isdigit()]
    return REDACTED if _passes_luhn(digits) else match.group(0)


def _passes_luhn(digits: list[int]) -> bool:
    total = 0
    for index, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if index % 2 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return total % 10 == 0


def _pydantic_types() -> tuple[type, type, type] | None:
    """Pydantic's BaseModel, SecretStr and SecretBytes, if pydantic is loaded.

    Looked up, never imported: a process that has not loaded pydantic holds no pydantic
    object, and importing it would cost the Lambda entry point's cold start ~100 ms.
    """
    module = sys.modules.get("pydantic")
    if module is None:
        return None
    return module.BaseModel, module.SecretStr, module.SecretBytes


def secret_values(source: object) -> Iterator[str]:
    """The secret text in ``source``: values under secret-looking names, and Secret* fields.

    Walks dicts, lists and pydantic models (at most 32 levels deep); a value under a
    secret-looking name is secret with everything inside it.
    """
    return _secret_values(source, _pydantic_types(), depth=0)


def _secret_values(
    source: object, types: tuple[type, type, type] | None, *, depth: int
) -> Iterator[str]:
    if depth > MAX_DEPTH:
        return
    if types is not None and isinstance(source, types[1] | types[2]):
        yield from _leaf_texts(source, types, depth=depth)
    elif types is not None and isinstance(source, types[0]):
        for name in type(source).model_fields:  # type: ignore[attr-defined]
            value = getattr(source, name, None)
            if SECRET_NAME.search(name):
                yield from _leaf_texts(value, types, depth=depth + 1)
            else:
                yield from _secret_values(value, types, depth=depth + 1)
    elif isinstance(source, dict):
        for key, value in source.items():
            if isinstance(key, str) and SECRET_NAME.search(key):
                yield from _leaf_texts(value, types, depth=depth + 1)
            else:
                yield from _secret_values(value, types, depth=depth + 1)
    elif isinstance(source, list | tuple):
        for item in source:
            yield from _secret_values(item, types, depth=depth + 1)


def _leaf_texts(value: Any, types: tuple[type, type, type] | None, *, depth: int) -> Iterator[str]:
    """Every scalar inside ``value`` as text (a secret's whole content)."""
    if depth > MAX_DEPTH or value is None or isinstance(value, bool):
        return
    if types is not None and isinstance(value, types[1] | types[2]):
        secret = value.get_secret_value()  # type: ignore[attr-defined]
        yield secret.decode("utf-8", "replace") if isinstance(secret, bytes) else str(secret)
    elif isinstance(value, str | int | float):
        yield str(value)
    elif types is not None and isinstance(value, types[0]):
        for name in type(value).model_fields:  # type: ignore[attr-defined]
            yield from _leaf_texts(getattr(value, name, None), types, depth=depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaf_texts(item, types, depth=depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaf_texts(item, types, depth=depth + 1)
