"""Fixtures every test directory may use, from the support package (``tests/support``).

Registered as plugins so that test modules use fixtures by name instead of importing
them from one another.
"""

pytest_plugins = [
    "tests.support.aws",
    "tests.support.aws_stack",
    "tests.support.gcp",
    "tests.support.gcp_stack",
    "tests.support.monitoring",
    "tests.support.backends.push",
]
