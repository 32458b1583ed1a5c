"""The console's server-sent events: what a pod writes stays inside its event's data."""

from __future__ import annotations

import re

from wharf.console.apps import log_event
from wharf.logs.model import LogLine


def fields(stream: str) -> list[str]:
    """The field names an EventSource reads (it breaks lines at CRLF, LF and a lone CR)."""
    return [line.split(":", 1)[0] for line in re.split(r"\r\n|\r|\n", stream) if line]


def test_a_log_line_cannot_add_fields_to_the_console_log_stream():
    hostile = "GET /\revent: gone\rretry: 99999999\rid: 7\rdata: x"
    entry = LogLine("2026-11-29T20:00:00Z", "lab1", "web-1", "web", hostile)
    event = log_event(entry)
    assert fields(event)[0] == "event"
    assert set(fields(event)[1:]) == {"data"}
    assert event.endswith("\n\n")
