"""GCP adapters (Firestore, GCS) against their emulators, for the contract suites.

No backend is registered yet: this module is filled in by the backend's own change.
"""

from __future__ import annotations

__all__: list[str] = []
