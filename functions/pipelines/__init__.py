"""The example pipelines this bundle ships, listed in ``functions.bundle.PIPELINE_MODULES``.

``etl`` (extract → audit and transform side by side → load). Each module defines one
module-level ``pipeline`` and does no I/O at import. ``relay plan NAME`` prints a
pipeline's plan; ``relay start NAME --wait`` runs one on the engine, like a saga.
"""
