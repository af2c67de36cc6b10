"""``python -m tooling.cli``: the ``relay`` command (chaos and the demo start the stack so)."""

from tooling.cli import main

main()
