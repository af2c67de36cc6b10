"""Adapters under test, one fixture per adapter, registered per port (see ``fixtures.py``)."""
