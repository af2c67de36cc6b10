"""``relay package``: reproducible deployable archives for Cloud Run functions and Lambda.

``archive`` builds the zips; ``locks`` reads the pinned requirement files they install
(written by ``make lock``). Imported by the CLI only, never by a function.
"""
