"""Monitoring: the workload feed Prometheus scrapes, and queries of it per project and app."""

from __future__ import annotations

__all__: list[str] = []
