"""The engine: the step protocol, runs, triggers and planning, over ports only."""
