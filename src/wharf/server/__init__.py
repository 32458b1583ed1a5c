"""The `wharf server` process: REST API, health, metrics (and, as capabilities land, the
console and the controllers)."""

from wharf.server.app import create_app

__all__ = ["create_app"]
