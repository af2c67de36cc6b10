"""Ports: the Protocols the engine needs from the outside world; adapters live in infra/."""
