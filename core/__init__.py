"""Relay's engine: sagas, the durable step protocol, and the ports adapters implement."""
