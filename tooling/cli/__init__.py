"""The ``relay`` command line (console script ``relay``; ``python -m tooling.cli``)."""

from tooling.cli.main import main

__all__ = ["main"]
