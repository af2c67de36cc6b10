"""Adapters implementing core's ports, one sub-package per backend (local, memory, gcp, aws)."""
