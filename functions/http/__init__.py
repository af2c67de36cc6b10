"""Relay's HTTP API: the routed Starlette app, request and push parsing, views and auth."""
