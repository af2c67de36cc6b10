"""Which sagas (and pipelines) a process serves, imported only when first needed (cold start).

Pipelines are found the way sagas are: by name, as references into the bundle
(``functions/bundle.py``'s ``PIPELINE_MODULES``), imported on first use.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

from core.domain.saga import Saga
from core.errors import (
    ConfigurationError,
    DefinitionError,
    UnknownPipelineError,
    UnknownSagaError,
)

if TYPE_CHECKING:
    from core.tasks.pipeline import Pipeline

DefinitionT = TypeVar("DefinitionT")


class SagaRegistry:
    """Sagas (and runnable pipelines) by name; entries are ready or imported on first use.

    A reference is ``"package.module:attribute"`` or ``"path/to/file.py:attribute"``.

    A worker that serves two sagas of a bundle of twenty imports only those two modules,
    so a function pays at cold start only for the code it runs.

    Pipelines (``pipelines=``, ``register_pipeline``) share the sagas' namespace: the
    engine runs a pipeline as the saga its plan compiles to (``core/tasks/runnable.py``),
    so ``get`` returns that saga, built on first use. A pipeline and a saga of the same
    name are a ``DefinitionError``.
    """

    def __init__(
        self,
        entries: Mapping[str, Saga | str] | None = None,
        *,
        pipelines: Mapping[str, Pipeline | str] | None = None,
    ) -> None:
        self._entries: dict[str, Saga | str] = dict(entries or {})
        self._pipelines: dict[str, Pipeline | str] = dict(pipelines or {})
        _check_namespace(self._entries, self._pipelines)
        self._lock = threading.Lock()

    def register(self, saga: Saga) -> Saga:
        """Add a saga; a second saga with the same name is a configuration error."""
        with self._lock:
            if saga.name in self._pipelines:
                _check_namespace({saga.name: saga}, self._pipelines)
            existing = self._entries.get(saga.name)
            if existing is not None and existing is not saga and not isinstance(existing, str):
                raise ConfigurationError(f"two different sagas are registered as {saga.name!r}")
            self._entries[saga.name] = saga.freeze()
        return saga

    def register_pipeline(self, pipeline: Pipeline) -> Saga:
        """Add a pipeline and return the saga that runs it.

        Raises:
            DefinitionError: a saga has the pipeline's name, or the pipeline cannot run
                (its plan is invalid, or a task streams its output).
        """
        from core.tasks.runnable import compile_pipeline

        with self._lock:
            if pipeline.name in self._entries and pipeline.name not in self._pipelines:
                _check_namespace(self._entries, {pipeline.name: pipeline})
            compiled = compile_pipeline(pipeline)
            self._pipelines[pipeline.name] = pipeline
            self._entries[pipeline.name] = compiled
        return compiled

    def names(self) -> list[str]:
        """Every saga and pipeline name this registry can serve, sorted."""
        return sorted({*self._entries, *self._pipelines})

    def pipeline_names(self) -> list[str]:
        """The names that are pipelines, sorted."""
        return sorted(self._pipelines)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._pipelines

    def get(self, name: str) -> Saga:
        """The saga (or compiled pipeline) called ``name``, importing it on first use.

        Raises:
            UnknownSagaError: no such saga or pipeline in this registry.
            ConfigurationError: the reference does not import or is not a Saga (a
                Pipeline, for a pipeline entry).
            DefinitionError: a pipeline that cannot run (see ``register_pipeline``).
        """
        entry = self._entries.get(name)
        if isinstance(entry, Saga):
            return entry
        if entry is None:
            if name in self._pipelines:
                return self._load_pipeline(name)
            raise UnknownSagaError(saga=name, known=self.names())
        try:
            saga = _import_definition(entry, Saga, kind="saga")
        except ConfigurationError as exc:
            raise ConfigurationError(f"saga {name!r} cannot be loaded: {exc}") from exc
        if saga.name != name:
            raise ConfigurationError(
                f"{entry!r} defines saga {saga.name!r}, but it is registered as {name!r}"
            )
        with self._lock:
            self._entries[name] = saga.freeze()
        return saga

    def _load_pipeline(self, name: str) -> Saga:
        from core.tasks.runnable import compile_pipeline

        pipeline = PipelineRegistry(self._pipelines).get(name)
        compiled = compile_pipeline(pipeline)
        with self._lock:
            self._entries[name] = compiled
        return compiled

    def restricted_to(self, names: Iterable[str]) -> SagaRegistry:
        """A registry serving only ``names`` (a worker configured for some sagas)."""
        wanted = list(names)
        unknown = [n for n in wanted if n not in self]
        if unknown:
            raise ConfigurationError(
                f"configured sagas {unknown} are not in the bundle; known: {self.names()}"
            )
        return SagaRegistry(
            {n: self._entries[n] for n in wanted if n not in self._pipelines},
            pipelines={n: self._pipelines[n] for n in wanted if n in self._pipelines},
        )

    def loaded(self) -> list[Saga]:
        """Every saga and compiled pipeline, importing all modules (manifest, CLI)."""
        return [self.get(name) for name in self.names()]


def _check_namespace(sagas: Mapping[str, object], pipelines: Mapping[str, object]) -> None:
    """Refuse a pipeline named like a saga: both are started by name on one route.

    Raises:
        DefinitionError: naming the clashing names.
    """
    clash = sorted(set(sagas) & set(pipelines))
    if clash:
        raise DefinitionError(
            f"{', '.join(repr(n) for n in clash)} name(s) both a saga and a pipeline; sagas and "
            "pipelines share one namespace (POST /v1/sagas/{name}/runs starts either), so "
            "rename one of them"
        )


class PipelineRegistry:
    """Pipelines by name; entries are ready pipelines or references imported on first use.

    References are written as for :class:`SagaRegistry`. Planning is not done here:
    ``get(name).plan()`` plans (and validates) the pipeline.
    """

    def __init__(self, entries: Mapping[str, Pipeline | str] | None = None) -> None:
        self._entries: dict[str, Pipeline | str] = dict(entries or {})
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """Every pipeline name this registry knows, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> Pipeline:
        """The pipeline called ``name``, importing its module on first use.

        Raises:
            UnknownPipelineError: no such pipeline in this registry.
            ConfigurationError: the reference does not import, is not a Pipeline, or
                defines a pipeline of another name.
        """
        from core.tasks.pipeline import Pipeline

        entry = self._entries.get(name)
        if entry is None:
            raise UnknownPipelineError(pipeline=name, known=self.names())
        if isinstance(entry, Pipeline):
            return entry
        try:
            pipeline = _import_definition(entry, Pipeline, kind="pipeline")
        except ConfigurationError as exc:
            raise ConfigurationError(f"pipeline {name!r} cannot be loaded: {exc}") from exc
        if pipeline.name != name:
            raise ConfigurationError(
                f"{entry!r} defines pipeline {pipeline.name!r}, but it is registered as {name!r}"
            )
        with self._lock:
            self._entries[name] = pipeline
        return pipeline


def import_pipeline(reference: str) -> Pipeline:
    """The pipeline a reference (``package.module:name`` or ``path/file.py:name``) names.

    Raises:
        ConfigurationError: the reference does not import or is not a Pipeline.
    """
    from core.tasks.pipeline import Pipeline

    return _import_definition(reference, Pipeline, kind="pipeline")


def _import_definition(reference: str, expected: type[DefinitionT], *, kind: str) -> DefinitionT:
    """Import the saga or pipeline ``package.module:name`` or ``path/file.py:name`` names.

    A path (it ends in ``.py`` or contains a ``/``) is resolved against the working
    directory and loaded as a module of its own, with its directory first on
    ``sys.path`` so it can import its neighbours: a saga or pipeline file needs no
    ``PYTHONPATH``. Any exception the module raises at import becomes a
    ``ConfigurationError`` naming the reference, so a broken saga or pipeline stops
    ``relay dev`` (or ``relay plan``) at startup with one clear line.
    """
    target, _, attribute = reference.rpartition(":")
    if not target or not attribute:
        raise ConfigurationError(
            f"{kind} reference {reference!r} must look like 'package.module:name' "
            "or 'path/to/file.py:name'"
        )
    try:
        module = _load_file(target, kind) if _is_path(target) else importlib.import_module(target)
    except ConfigurationError:
        raise
    except Exception as exc:  # user code: any error at import is a configuration error
        raise ConfigurationError(
            f"cannot import {kind} module {target!r} ({reference!r}): {type(exc).__name__}: {exc}"
        ) from exc
    found = getattr(module, attribute, None)
    if not isinstance(found, expected):
        what = "does not define it" if found is None else f"defines it as {type(found).__name__}"
        raise ConfigurationError(f"{reference!r} must name a {expected.__name__}; {target} {what}")
    return found


def _is_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def _load_file(target: str, kind: str) -> ModuleType:
    path = Path(target).expanduser().resolve()
    if not path.is_file():
        raise ConfigurationError(
            f"{kind} file {target!r} does not exist (looked for {path}; relative paths are "
            "relative to the working directory)"
        )
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"relay_saga_file_{path.stem}_{digest}"
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"{kind} file {target!r} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
