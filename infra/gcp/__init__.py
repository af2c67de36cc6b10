"""The Google Cloud backend: run state in Firestore.

One module per technology (``firestore.py``); each imports its Google client library
lazily, on first use, so importing an adapter costs nothing at cold start. ``README.md``
says how to run the emulators the tests use.
"""
