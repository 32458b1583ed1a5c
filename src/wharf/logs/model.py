"""What a log read may ask for, and how lines from many pods become one labelled stream.

Every read is bounded: a time window (`since`), a number of lines, a number of bytes and a
wall-clock timeout. Values left out get defaults; values over the maximum are refused with the
field named, never clipped silently.
"""

from __future__ import annotations

import datetime as dt
import heapq
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from wharf.core.errors import InvalidError

DEFAULT_SINCE = dt.timedelta(hours=1)
MAX_SINCE = dt.timedelta(days=7)
DEFAULT_LINES = 500
MAX_LINES = 5000
DEFAULT_BYTES = 1 << 20
MAX_BYTES = 8 << 20
DEFAULT_TIMEOUT = 300.0  # a followed stream ends after this; the client reconnects
MAX_TIMEOUT = 3600.0
# A pod's or container's name: a DNS-1123 label/subdomain, nothing that reaches another path.
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, field: str) -> dt.timedelta:
    """`30s`, `5m`, `2h`, `1d`: a whole number and a unit."""
    match = DURATION.match(text.strip())
    if not match:
        raise InvalidError(
            f"{field}: {text!r} is not a duration such as 30s, 5m, 2h or 1d", field=field
        )
    return dt.timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])


def checked_name(text: str, field: str) -> str:
    if not NAME.match(text):
        raise InvalidError(f"{field}: {text!r} is not a pod or container name", field=field)
    return text


@dataclass(frozen=True)
class LiveBounds:
    """How far back, how much and how long a live read may go."""

    since: dt.timedelta = DEFAULT_SINCE
    lines: int = DEFAULT_LINES
    bytes: int = DEFAULT_BYTES
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def of(
        cls,
        since: str | None = None,
        lines: int | None = None,
        limit_bytes: int | None = None,
        timeout: float | None = None,
    ) -> LiveBounds:
        window = parse_duration(since, "since") if since else DEFAULT_SINCE
        if window > MAX_SINCE:
            raise InvalidError(
                f"since: at most {MAX_SINCE.days}d back (asked {since})", field="since"
            )
        return cls(
            since=window,
            lines=_within(lines, DEFAULT_LINES, MAX_LINES, "tail"),
            bytes=_within(limit_bytes, DEFAULT_BYTES, MAX_BYTES, "limitBytes"),
            timeout=_within(timeout, DEFAULT_TIMEOUT, MAX_TIMEOUT, "timeout"),
        )


N = TypeVar("N", int, float)


def _within(value: N | None, default: N, maximum: N, field: str) -> N:
    if value is None:
        return default
    if not 1 <= value <= maximum:
        raise InvalidError(f"{field}: must be between 1 and {maximum} (got {value})", field=field)
    return value


@dataclass(frozen=True, order=True)
class LogLine:
    """One line a container wrote, with where it came from."""

    time: str  # RFC 3339 as the cluster stamped it (sorts as text within one format)
    cluster: str
    pod: str
    container: str
    line: str

    def as_dict(self) -> dict[str, str]:
        return {
            "time": self.time,
            "cluster": self.cluster,
            "pod": self.pod,
            "container": self.container,
            "line": self.line,
        }

    @property
    def prefix(self) -> str:
        """`cluster/pod` as stern prints it before each line."""
        return f"{self.cluster}/{self.pod}"


STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$")


def split_stamp(text: str) -> tuple[str, str]:
    """The timestamp the kubelet puts first (`timestamps=true`), with its fraction padded to
    nanoseconds so that stamps sort as text, and the line after it."""
    stamp, _, line = text.rstrip("\n").partition(" ")
    match = STAMP.match(stamp)
    if match is None:
        return "", text.rstrip("\n")
    return f"{match.group(1)}.{(match.group(2) or '').ljust(9, '0')}Z", line


def merged(streams: Iterable[list[LogLine]], lines: int) -> list[LogLine]:
    """Each pod's lines are in time order already: merge them and keep the last `lines`."""
    everything = list(heapq.merge(*streams, key=lambda entry: entry.time))
    return everything[-lines:]
