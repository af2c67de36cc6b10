"""Which sagas a process serves, imported only when first needed (cold start)."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable, Mapping

from core.domain.saga import Saga
from core.errors import ConfigurationError, UnknownSagaError


class SagaRegistry:
    """Sagas by name; entries are ready sagas or ``"module:attribute"`` references.

    A worker that serves two sagas of a bundle of twenty imports only those two modules,
    so a function pays at cold start only for the code it runs.
    """

    def __init__(self, entries: Mapping[str, Saga | str] | None = None) -> None:
        self._entries: dict[str, Saga | str] = dict(entries or {})
        self._lock = threading.Lock()

    def register(self, saga: Saga) -> Saga:
        """Add a saga; a second saga with the same name is a configuration error."""
        with self._lock:
            existing = self._entries.get(saga.name)
            if existing is not None and existing is not saga and not isinstance(existing, str):
                raise ConfigurationError(f"two different sagas are registered as {saga.name!r}")
            self._entries[saga.name] = saga.freeze()
        return saga

    def names(self) -> list[str]:
        """Every saga name this registry can serve, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> Saga:
        """The saga called ``name``, importing its module on first use.

        Raises:
            UnknownSagaError: no such saga in this registry.
            ConfigurationError: the reference does not import or is not a Saga.
        """
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownSagaError(saga=name, known=self.names())
        if isinstance(entry, Saga):
            return entry
        saga = _import_saga(entry)
        if saga.name != name:
            raise ConfigurationError(
                f"{entry!r} defines saga {saga.name!r}, but it is registered as {name!r}"
            )
        with self._lock:
            self._entries[name] = saga.freeze()
        return saga

    def restricted_to(self, names: Iterable[str]) -> SagaRegistry:
        """A registry serving only ``names`` (a worker configured for some sagas)."""
        wanted = list(names)
        unknown = [n for n in wanted if n not in self._entries]
        if unknown:
            raise ConfigurationError(
                f"configured sagas {unknown} are not in the bundle; known: {self.names()}"
            )
        return SagaRegistry({n: self._entries[n] for n in wanted})

    def loaded(self) -> list[Saga]:
        """Every saga, importing all modules (for the manifest and the CLI)."""
        return [self.get(name) for name in self.names()]


def _import_saga(reference: str) -> Saga:
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"saga reference {reference!r} must look like 'package.module:name'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import saga module {module_name!r}: {exc}") from exc
    saga = getattr(module, attribute, None)
    if not isinstance(saga, Saga):
        raise ConfigurationError(f"{reference!r} is not a Saga (found {type(saga).__name__})")
    return saga
