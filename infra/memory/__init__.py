"""In-process adapters for fast engine unit tests: correct, thread-safe, not durable."""
