"""``relay package``: reproducible deployable archives for Cloud Run functions and Lambda.

``archive`` builds the zips; ``locks`` writes the pinned requirement files they install.
Imported by the CLI only, never by a function.
"""
