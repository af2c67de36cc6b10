"""The sagas this bundle ships, by name, as import references (nothing imported here).

A worker imports only the modules of the sagas it serves (``RELAY_SAGAS``), so adding a
saga to the bundle does not slow the cold start of functions that do not run it.
Add your own with ``RELAY_SAGA_MODULES="name=package.module:attribute,..."``.
"""

from __future__ import annotations

SAGA_MODULES: dict[str, str] = {
    "order": "functions.sagas.order:saga",
    "onboarding": "functions.sagas.onboarding:saga",
}
