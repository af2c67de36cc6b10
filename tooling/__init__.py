"""Tooling, never deployed: the ``relay`` CLI, dev stack, demo, chaos, manifest and packaging."""
