"""The manifest the Terraform consistency tests check the modules against."""

from __future__ import annotations

import json
from typing import Any


def bundle_manifest() -> dict[str, Any]:
    """What ``relay manifest`` prints for this bundle, as Terraform's ``jsondecode`` sees it."""
    from core.registry import SagaRegistry
    from functions.settings import Settings
    from tooling.manifest import build_manifest

    settings = Settings.from_env({})
    registry = SagaRegistry(dict(settings.saga_modules), pipelines=dict(settings.pipeline_modules))
    built: dict[str, Any] = json.loads(json.dumps(build_manifest(registry)))
    return built
