"""The embedded backend (default): state and queue in one SQLite file, results as files."""
