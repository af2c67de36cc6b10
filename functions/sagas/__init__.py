"""The example sagas this bundle ships (``order``, ``onboarding``), listed in ``functions.bundle``.

Each module defines one module-level ``saga`` and does no I/O at import, so a worker that
serves one saga pays nothing at cold start for the others.
"""
