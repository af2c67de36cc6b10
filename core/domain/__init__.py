"""Value objects and status machines of Relay: runs, steps, messages. No I/O here."""
