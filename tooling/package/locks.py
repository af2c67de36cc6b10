"""The pinned requirement files the archives install, as uv resolved them.

``requirements-gcp.txt`` (the runtime dependencies and the gcp extra: what the Cloud Run
buildpack installs) and ``requirements-aws.txt`` (the runtime dependencies and the aws
extra: what goes into the Lambda zip) are resolved for Linux and CPython 3.12 by
``make lock`` (``uv pip compile``), at the versions of ``requirements-dev.txt``, the set
the tests run. This module only reads them: no resolver runs while packaging.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from core.errors import EngineError

ROOT: Final = Path(__file__).resolve().parents[2]
"""The project root: core/, infra/, functions/, the lock files and pyproject.toml."""
LOCK_FILES: Final[Mapping[str, str]] = {
    "gcp": "requirements-gcp.txt",
    "aws": "requirements-aws.txt",
}
_PIN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9._+!-]+")


class PackagingError(EngineError):
    """Raised when an archive cannot be built: a missing or broken lock file, or pip failed."""


def read_lock(target: str) -> list[str]:
    """The ``name==version`` lines of ``target``'s lock file, without uv's comments.

    Raises:
        PackagingError: the lock file is missing, or a line is not an exact pin (the archive
            would install something nobody tested).
    """
    path = ROOT / LOCK_FILES[target]
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PackagingError(f"{path.name} is missing; generate it with `make lock`") from None
    pins = []
    for number, line in enumerate(text.splitlines(), start=1):
        requirement = line.split("#", 1)[0].strip()  # uv's "# via ..." annotations
        if not requirement:
            continue
        if not _PIN.fullmatch(requirement):
            raise PackagingError(
                f"{path.name}:{number}: {requirement!r} is not a `name==version` pin for "
                f"Linux / CPython 3.12; generate the file again with `make lock`"
            )
        pins.append(requirement)
    return pins


def name_of(requirement: str) -> str:
    """The normalised distribution name (PEP 503) of a ``name==version`` line."""
    return re.sub(r"[-_.]+", "-", requirement.split("==", 1)[0]).lower()
