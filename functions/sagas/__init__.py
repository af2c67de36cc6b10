"""The example sagas this bundle ships, listed in ``functions.bundle``.

``order`` (compensations), ``onboarding`` (also started by a ``users.*.signed_up`` event),
``fulfilment`` (waits for an event, sleeps) and ``stock_report`` (a daily schedule).

Each module defines one module-level ``saga`` and does no I/O at import, so a worker that
serves one saga pays nothing at cold start for the others.
"""
