"""What a deployed function contains: platform entry points, the HTTP app, the bundle's sagas.

Nothing here is tooling (the CLI, dev stack, manifest and packaging live in ``tooling/``).
"""
