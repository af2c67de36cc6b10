"""How an environment variable is declared: once, with where it is used and how it parses.

``functions/settings.py`` declares each variable that fills a ``Settings`` attribute on
the attribute itself, with :func:`setting`; the few read elsewhere (logs, metrics labels,
the SDKs' credentials) are :data:`READ_ELSEWHERE` below. Both make up
``functions.settings.VARIABLES``, the one table that ``Settings.from_env``, the
manifest's ``env`` and ``config`` (``tooling/manifest.py``) and the tests read.

Who sets a variable (``set_by``) decides whether a deployment lists it:

* ``"deployment"``: Terraform sets it, for the platforms and function roles given.
* ``"runtime"``: the host sets it (Cloud Run's ``K_SERVICE``/``K_REVISION``, Lambda's
  credentials and ``_X_AMZN_TRACE_ID``, a terminal's ``COLUMNS``); a deployment must not.
* ``"developer"``: local runs and tests only (``RELAY_SIGNING_KEY``, ``RELAY_FAULTS``,
  ``RELAY_OIDC_CERTS_URL``).

:data:`EMULATOR_VARIABLES` are emulator endpoints, read by the SDKs themselves (and by the
metrics switch); never part of a deployment.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeVar

from core.errors import ConfigurationError

T = TypeVar("T")

BACKENDS: Final = ("local", "memory", "gcp", "aws")
"""The values of ``RELAY_BACKEND``."""

Platform = Literal["local", "memory", "gcp", "aws"]
"""A value of ``RELAY_BACKEND``; ``gcp`` and ``aws`` are also the deployment platforms."""
SetBy = Literal["deployment", "runtime", "developer"]
"""Who gives a variable its value (see the module docstring)."""

ALL_BACKENDS: Final = frozenset(BACKENDS)
CLOUD: Final = frozenset({"gcp", "aws"})
LOCAL: Final = frozenset({"local"})
GCP: Final = frozenset({"gcp"})
AWS: Final = frozenset({"aws"})
ALL_ROLES: Final = frozenset({"api", "worker", "relay", "pubsub"})
"""Function roles: the names of the manifest's function targets."""
DELIVERY_ROLES: Final = frozenset({"worker", "relay", "pubsub"})
API_ROLES: Final = frozenset({"api", "relay"})
"""Roles that serve the public run API (start, read, list runs)."""
"""Roles that receive Pub/Sub messages (push to ``/v1/events`` or Eventarc)."""
NO_ROLES: Final = frozenset[str]()
"""CLI and tooling only: no deployed function reads it."""

Parser = Callable[[str, str], T]
"""Turns a variable's text (stripped; its default when empty) into a value.

Called with the variable's name and its text; raises ``ConfigurationError`` naming the
variable when the text is malformed.
"""

_VARIABLE: Final = "relay.env"
"""The key of a ``Settings`` field's metadata that holds its ``EnvVariable``."""


@dataclass(frozen=True, slots=True)
class EnvVariable:
    """One environment variable that Relay's code reads.

    Attributes:
        name: The variable, spelled once.
        platforms: Backends (``RELAY_BACKEND`` values) on which the code uses it.
        roles: Function roles (``api``, ``worker``, ``relay``, ``pubsub``) that need it.
        description: What it means, for ``docs/manifest.md`` readers and Terraform.
        set_by: Who sets it: the deployment, the runtime (host), or a developer.
        default: The text used when it is unset or empty.
        fixed: Per platform, the value every function gets (the manifest's ``config``).
        attribute: The ``Settings`` attribute it fills; None when read elsewhere.
        parse: How ``Settings.from_env`` turns its text into that attribute's value.
    """

    name: str
    platforms: frozenset[str]
    roles: frozenset[str]
    description: str
    set_by: SetBy = "deployment"
    default: str = ""
    fixed: tuple[tuple[str, str], ...] = ()
    attribute: str | None = None
    parse: Parser[object] | None = None


def variable(
    name: str,
    platforms: frozenset[str],
    roles: frozenset[str],
    description: str,
    *,
    set_by: SetBy = "deployment",
    default: str = "",
    fixed: Mapping[str, str] | None = None,
) -> EnvVariable:
    """A variable that no ``Settings`` attribute holds (read where it is used)."""
    pairs = tuple(sorted((fixed or {}).items()))
    return EnvVariable(name, platforms, roles, description, set_by, default, pairs)


def setting(
    name: str,
    platforms: frozenset[str],
    roles: frozenset[str],
    description: str,
    *,
    parse: Parser[T],
    set_by: SetBy = "deployment",
    default: str = "",
    fixed: Mapping[str, str] | None = None,
) -> T:
    """A ``Settings`` field filled from variable ``name``: its one declaration.

    The field's default is ``parse(name, default)``, what an empty environment reads, and
    mypy checks ``parse``'s result type against the field's annotation.
    """
    declared = variable(
        name, platforms, roles, description, set_by=set_by, default=default, fixed=fixed
    )
    declared = dataclasses.replace(declared, parse=parse)
    return dataclasses.field(
        default_factory=lambda: parse(name, default), metadata={_VARIABLE: declared}
    )


def settings_variables(settings_class: type) -> list[EnvVariable]:
    """The variables of a dataclass's ``setting`` fields, each naming its attribute.

    Raises:
        TypeError: a field is not declared with ``setting`` (it would read no variable).
    """
    found: list[EnvVariable] = []
    for field in dataclasses.fields(settings_class):
        declared = field.metadata.get(_VARIABLE)
        if not isinstance(declared, EnvVariable):
            raise TypeError(f"{settings_class.__name__}.{field.name} is not declared by setting()")
        found.append(dataclasses.replace(declared, attribute=field.name))
    return found


# -- parsers -------------------------------------------------------------------------------


def text(name: str, value: str) -> str:
    """The text as is."""
    return value


def optional_text(name: str, value: str) -> str | None:
    """The text; None when empty."""
    return value or None


def integer(name: str, value: str) -> int:
    """A base-10 integer."""
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(f"{name}={value!r} is not an integer") from None


def path(name: str, value: str) -> Path:
    """A filesystem path (not resolved: relative paths stay relative to the process)."""
    return Path(value)


def comma_list(name: str, value: str) -> tuple[str, ...]:
    """Comma-separated items, stripped; empty items dropped."""
    return tuple(split_commas(value))


def split_commas(value: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated list."""
    return [part.strip() for part in value.split(",") if part.strip()]


def one_of(choices: Sequence[str], *, lower: bool = False) -> Parser[str]:
    """One of ``choices`` (compared lower-cased when ``lower``)."""

    def parse(name: str, value: str) -> str:
        chosen = value.lower() if lower else value
        if chosen not in choices:
            raise ConfigurationError(f"{name}={chosen!r} is not one of {', '.join(choices)}")
        return chosen

    return parse


def string_map(name: str, value: str) -> dict[str, str]:
    """A JSON object of non-empty strings; {} when empty."""
    if not value:
        return {}
    try:
        loaded = json.loads(value)
    except ValueError as exc:
        raise ConfigurationError(f"{name} is not valid JSON ({exc})") from None
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in loaded.items()
    ):
        raise ConfigurationError(
            f'{name} must be a JSON object of non-empty strings, like {{"name": "value"}}'
        )
    return loaded


# -- variables read outside Settings ----------------------------------------------------

READ_ELSEWHERE: Final = (
    variable(
        "RELAY_LOG_LEVEL",
        ALL_BACKENDS,
        ALL_ROLES,
        "DEBUG, INFO, WARNING or ERROR (read by functions/logs.py)",
        default="INFO",
    ),
    variable(
        "RELAY_LOG_FORMAT",
        ALL_BACKENDS,
        ALL_ROLES,
        "gcp, aws or plain log lines (read by functions/logs.py); default: the backend's",
        fixed={"gcp": "gcp", "aws": "aws"},
    ),
    variable(
        "COLUMNS",
        LOCAL,
        NO_ROLES,
        "terminal width for the CLI's tables (tooling/timeline.py)",
        set_by="runtime",
    ),
    variable(
        "PYTHONPATH",
        LOCAL,
        NO_ROLES,
        "extended for the processes `relay dev` starts (tooling/local_stack.py)",
        set_by="runtime",
    ),
    variable(
        "GOOGLE_CLOUD_REGION",
        GCP,
        ALL_ROLES,
        "the region, as the location label of metrics (infra/gcp/monitoring.py)",
    ),
    variable(
        "K_SERVICE",
        GCP,
        ALL_ROLES,
        "set by Cloud Run: the service name (metrics resource labels)",
        set_by="runtime",
    ),
    variable(
        "K_REVISION",
        GCP,
        ALL_ROLES,
        "set by Cloud Run: the revision name (metrics resource labels)",
        set_by="runtime",
    ),
    variable(
        "_X_AMZN_TRACE_ID",
        AWS,
        ALL_ROLES,
        "set by Lambda per invocation: the X-Ray trace of log lines",
        set_by="runtime",
    ),
    *(
        variable(
            name,
            AWS,
            ALL_ROLES,
            "set by Lambda (the execution role's credentials): keys the boto3 session",
            set_by="runtime",
        )
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    ),
    variable(
        "AWS_PROFILE",
        AWS,
        ALL_ROLES,
        "a developer's named profile; keys the boto3 session (unset on Lambda)",
        set_by="developer",
    ),
)
"""Variables that code other than ``Settings`` reads (``functions/logs.py``, ``infra/``...)."""

EMULATOR_VARIABLES: Final = (
    "AWS_ENDPOINT_URL",
    "CLOUD_TASKS_EMULATOR_HOST",
    "FIRESTORE_EMULATOR_HOST",
    "PUBSUB_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
)
"""Emulator endpoints: read by the SDKs (and to turn metrics off), never deployment config."""
