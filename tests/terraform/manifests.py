"""The manifest the Terraform consistency tests check the modules against."""

from __future__ import annotations

import json
from typing import Any


def bundle_manifest() -> dict[str, Any]:
    """What ``relay manifest`` prints for this bundle, as Terraform's ``jsondecode`` sees it."""
    from core.registry import SagaRegistry
    from functions.settings import Settings
    from tooling.manifest import build_manifest

    registry = SagaRegistry(dict(Settings.from_env({}).saga_modules))
    built: dict[str, Any] = json.loads(json.dumps(build_manifest(registry)))
    return built


ISSUE10_VARIABLES = frozenset(
    {
        # apiauth: who may call the run API (the api function; GCP and AWS).
        "RELAY_API_AUTH",
        "RELAY_PLATFORM_GRANTS",
        # signing: the worker's principal per route (GCP).
        "RELAY_OPERATOR_EMAILS",
        "RELAY_PUSH_SERVICE_ACCOUNT",
        "RELAY_SCHEDULER_SERVICE_ACCOUNT",
    }
)
"""Variables the modules set that other parts of issue 10 declare in functions/settings.py.

Each must be declared there with ``set_by="deployment"`` (the API ones on gcp and aws for
the api role, the principals on gcp for the worker's roles) so that the manifest lists them.
"""


def undeclared_issue10_variables() -> frozenset[str]:
    """The names of :data:`ISSUE10_VARIABLES` that functions/settings.py does not declare yet.

    Until the parts of issue 10 merge, the manifest lists them for no function and the
    checks for stray names tolerate exactly these; once declared, they are checked like
    every other name and this returns the empty set.
    """
    from functions.settings import VARIABLES

    return ISSUE10_VARIABLES - set(VARIABLES)
