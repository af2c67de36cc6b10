"""The local runtime that drives the embedded backend: dispatcher, worker supervisor, cron loop."""
