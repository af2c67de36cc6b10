"""The Google Cloud backend: run state in Firestore, large step outputs in Cloud Storage.

One module per technology (``firestore.py``, ``gcs_io.py``); each imports its Google
client library lazily, on first use, so importing an adapter costs nothing at cold start.
``README.md`` says how to run the emulators the tests use.
"""
