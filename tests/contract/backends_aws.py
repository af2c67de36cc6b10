"""AWS adapters (DynamoDB, SQS, S3) against moto server, for the contract suites.

No backend is registered yet: this module is filled in by the backend's own change.
"""

from __future__ import annotations

__all__: list[str] = []
