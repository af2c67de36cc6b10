"""Pinned requirement files of the archives, generated from the project's environment.

``requirements-gcp.txt``: the runtime dependencies and the gcp extra of pyproject.toml
(what the Cloud Run buildpack installs). ``requirements-aws.txt``: what the Lambda
handler imports (``LAMBDA_RUNTIME_ROOTS`` and the aws extra), installed into the Lambda
zip. Both pin every distribution of the closure at the version installed here, with
markers evaluated for Linux and the archive's CPython. Regenerate them with
``python -m tooling.package lock`` in the project venv.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from core.errors import EngineError

ROOT: Final = Path(__file__).resolve().parents[2]
"""The project root: core/, infra/, functions/, the lock files and pyproject.toml."""
LOCK_FILES: Final[Mapping[str, str]] = {
    "gcp": "requirements-gcp.txt",
    "aws": "requirements-aws.txt",
}
LOCK_PYTHON_VERSION: Final = "3.12"
"""The CPython whose markers the lock files are evaluated for (Cloud Run and Lambda)."""
LAMBDA_RUNTIME_ROOTS: Final = ("pydantic", "starlette", "croniter")
"""What the Lambda handler imports besides the aws extra: core (pydantic; croniter for
schedules) and the routed app (starlette). The CLI's libraries (click, rich, httpx,
uvicorn, aiohttp) and functions-framework never load on Lambda."""


class PackagingError(EngineError):
    """Raised when an archive cannot be built: a missing lock file, or pip failed."""


def read_lock(target: str) -> list[str]:
    """The ``name==version`` lines of ``target``'s lock file.

    Raises:
        PackagingError: the lock file is missing.
    """
    path = ROOT / LOCK_FILES[target]
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PackagingError(
            f"{path.name} is missing; generate it with `python -m tooling.package lock`"
        ) from None
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def name_of(requirement: str) -> str:
    """The canonical distribution name of a ``name==version`` line."""
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(requirement.split("==", 1)[0]))


def locked_requirements(roots: Iterable[str], *, python_version: str) -> list[str]:
    """``name==version`` for ``roots`` and everything they need, from installed metadata.

    Markers are evaluated for Linux and CPython ``python_version`` (the platform the
    archive runs on), not for this machine.

    Raises:
        PackagingError: a needed distribution is not installed here.
    """
    from importlib import metadata

    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    environment = {key: str(value) for key, value in default_environment().items()}
    environment |= {
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    pins: dict[str, str] = {}
    pending: list[tuple[str, frozenset[str]]] = [(root, frozenset()) for root in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, extras = pending.pop()
        key = (str(canonicalize_name(name)), extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise PackagingError(
                f"{name} is needed on CPython {python_version} but not installed here; "
                "install it (pip install ...) and generate the lock files again"
            ) from None
        pins[str(canonicalize_name(dist.metadata["Name"]))] = (
            f"{dist.metadata['Name']}=={dist.version}"
        )
        for text in dist.requires or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(
                marker.evaluate({**environment, "extra": extra}) for extra in extras or {""}
            ):
                pending.append((requirement.name, frozenset(requirement.extras)))
    return [pins[name] for name in sorted(pins)]


def project_requirements() -> tuple[list[str], dict[str, list[str]]]:
    """The base dependencies and the extras of ``pyproject.toml``, as requirement names."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = [Requirement(text).name for text in project["dependencies"]]
    extras = {
        extra: [Requirement(text).name for text in texts]
        for extra, texts in project["optional-dependencies"].items()
    }
    return base, extras


def write_lock_files(*, python_version: str = LOCK_PYTHON_VERSION) -> list[Path]:
    """Generate requirements-gcp.txt and requirements-aws.txt from this environment."""
    base, extras = project_requirements()
    roots = {
        "gcp": [*base, *extras["gcp"]],
        "aws": [*LAMBDA_RUNTIME_ROOTS, *extras["aws"]],
    }
    described = {
        "gcp": "the runtime dependencies and the gcp extra of pyproject.toml",
        "aws": "what the Lambda handler imports: "
        + ", ".join(LAMBDA_RUNTIME_ROOTS)
        + " and the aws extra of pyproject.toml",
    }
    written = []
    for target, names in roots.items():
        pins = locked_requirements(names, python_version=python_version)
        path = ROOT / LOCK_FILES[target]
        path.write_text(
            f"# relay package --target {target}: {described[target]}, pinned.\n"
            f"# Regenerate: python -m tooling.package lock (in the project venv).\n"
            + "\n".join(pins)
            + "\n"
        )
        written.append(path)
    return written
