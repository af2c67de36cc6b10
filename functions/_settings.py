"""Configuration read from the environment, in one place, with one spelling per name."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigurationError
from functions.bundle import SAGA_MODULES

BACKENDS = ("local", "memory", "gcp", "aws")
KEY_FILE_NAME = "signing.key"


@dataclass(frozen=True)
class Settings:
    """Everything a function reads from its environment.

    Attributes:
        backend: ``RELAY_BACKEND``: local (SQLite, the default), memory, gcp or aws.
        data_dir: ``RELAY_DATA_DIR``: where the embedded backend keeps its files.
        sagas: ``RELAY_SAGAS``: comma-separated saga names this process serves (all when
            empty).
        saga_modules: the bundle's sagas plus ``RELAY_SAGA_MODULES`` entries.
        faults: ``RELAY_FAULTS``: fault-injection rules (see ``core.faults``).
        signing_key: ``RELAY_SIGNING_KEY``: HMAC key for local deliveries; when unset it is
            read from (or created in) ``<data_dir>/signing.key``.
        inline_output_limit_bytes: ``RELAY_INLINE_OUTPUT_LIMIT``: outputs larger than
            this go through the I/O manager.
    """

    backend: str = "local"
    data_dir: Path = Path(".relay")
    sagas: tuple[str, ...] = ()
    saga_modules: Mapping[str, str] = field(default_factory=lambda: dict(SAGA_MODULES))
    faults: str = ""
    signing_key: str | None = None
    inline_output_limit_bytes: int = 64 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``).

        Raises:
            ConfigurationError: naming the variable that is wrong.
        """
        env = os.environ if environ is None else environ
        backend = env.get("RELAY_BACKEND", "local").strip() or "local"
        if backend not in BACKENDS:
            raise ConfigurationError(
                f"RELAY_BACKEND={backend!r} is not one of {', '.join(BACKENDS)}"
            )
        modules = dict(SAGA_MODULES)
        for item in _split(env.get("RELAY_SAGA_MODULES", "")):
            name, eq, reference = item.partition("=")
            if not eq or ":" not in reference:
                raise ConfigurationError(
                    f"RELAY_SAGA_MODULES entry {item!r} must look like "
                    "name=package.module:attribute"
                )
            modules[name.strip()] = reference.strip()
        limit_text = env.get("RELAY_INLINE_OUTPUT_LIMIT", str(64 * 1024))
        try:
            limit = int(limit_text)
        except ValueError:
            raise ConfigurationError(
                f"RELAY_INLINE_OUTPUT_LIMIT={limit_text!r} is not an integer"
            ) from None
        return cls(
            backend=backend,
            data_dir=Path(env.get("RELAY_DATA_DIR", ".relay")),
            sagas=tuple(_split(env.get("RELAY_SAGAS", ""))),
            saga_modules=modules,
            faults=env.get("RELAY_FAULTS", ""),
            signing_key=env.get("RELAY_SIGNING_KEY") or None,
            inline_output_limit_bytes=limit,
        )

    def signing_key_bytes(self) -> bytes:
        """The HMAC key for local deliveries, creating a private key file on first use."""
        if self.signing_key:
            return self.signing_key.encode()
        path = self.data_dir / KEY_FILE_NAME
        try:
            return path.read_bytes().strip()
        except FileNotFoundError:
            pass
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        return key


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
