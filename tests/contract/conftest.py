"""The contract suites run once per registered adapter (``tests/support/backends``)."""

from tests.support.backends.fixtures import *  # noqa: F403
