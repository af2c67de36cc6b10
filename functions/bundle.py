"""The sagas and pipelines this bundle ships, by name, as import references (none imported).

A worker imports only the modules of the sagas it serves (``RELAY_SAGAS``), so adding a
saga to the bundle does not slow the cold start of functions that do not run it.
Add a saga of your own to the bundle: write it in ``functions/sagas/<name>.py`` and list it
here; it is then served, listed by ``relay manifest`` and deployed like these. To try a
saga that lives outside the bundle, ``RELAY_SAGA_MODULES="name=path/to/file.py:saga"``.

Pipelines are listed the same way in ``PIPELINE_MODULES`` (``functions/pipelines/<name>.py``);
``relay plan NAME`` finds them there, and ``relay plan path/to/file.py:pipeline`` plans one
that lives outside the bundle. The engine runs a pipeline as a saga of one step per task
(``core/tasks/runnable.py``), started by name like a saga (``relay start etl``); pipelines
and sagas share one namespace. ``RELAY_PIPELINE_MODULES`` adds pipelines outside the bundle.
"""

from __future__ import annotations

SAGA_MODULES: dict[str, str] = {
    "order": "functions.sagas.order:saga",
    "onboarding": "functions.sagas.onboarding:saga",
    "fulfilment": "functions.sagas.fulfilment:saga",
    "stock_report": "functions.sagas.stock_report:saga",
}

PIPELINE_MODULES: dict[str, str] = {
    "etl": "functions.pipelines.etl:pipeline",
}
