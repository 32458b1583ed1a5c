"""What a log read may ask for, and how lines from many pods become one labelled stream.

Every read is bounded: a time window (`since`), a number of lines, a number of bytes and a
wall-clock timeout. Values left out get defaults; values over the maximum are refused with the
field named, never clipped silently.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import heapq
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from wharf.core.errors import InvalidError, NotFoundError

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
    match = DURATION.fullmatch(text.strip())
    if not match:
        raise InvalidError(
            f"{field}: {text!r} is not a duration such as 30s, 5m, 2h or 1d", field=field
        )
    return dt.timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])


def checked_name(text: str, field: str) -> str:
    if not NAME.fullmatch(text):
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


# --- Search over history (the log store: VictoriaLogs, docs/observability-logs.md) -----------

DEFAULT_SEARCH_LIMIT = 100
MAX_SEARCH_LIMIT = 1000
MAX_SEARCH_RANGE = dt.timedelta(days=7)
MAX_TEXT = 512
SEARCH_TIMEOUT = 10.0  # seconds the store may spend on one page
# A collected line's file, in the kubelet's layout: .../<namespace>_<pod>_<uid>/<container>/N.log
POD_LOG_FILE = re.compile(r"/([a-z0-9][-a-z0-9]*)_([a-z0-9][-a-z0-9.]*)_([^/]+)/([^/]+)/[^/]+$")
CRI_LINE = re.compile(r"^(\S+) (stdout|stderr) [FP] (.*)$", re.S)
# RE2's metacharacters: a backslash before each makes it literal (Go's regexp takes `\` before
# any punctuation as the character itself).
RE2_META = frozenset("\\.+*?()|[]{}^$")
KUBE_RANDOM = "[bcdfghjklmnpqrstvwxz2456789]"  # the alphabet of generated names' suffixes


def re2_literal(text: str) -> str:
    """A regular expression (RE2) matching exactly `text`."""
    return "".join("\\" + c if c in RE2_META else c for c in text)


def logsql_string(text: str) -> str:
    """A LogsQL double-quoted string literal of `text` (Go's escapes, as JSON writes them).
    Not ASCII-escaped: JSON's surrogate pairs for an emoji are no Go escape, and the store
    refuses them."""
    return json.dumps(text, ensure_ascii=False)


def parse_instant(text: str, field: str, now: dt.datetime) -> dt.datetime:
    """`5m` (that long before now) or an RFC 3339 time with its zone."""
    text = text.strip()
    if DURATION.fullmatch(text):
        return now - parse_duration(text, field)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise InvalidError(
            f"{field}: {text!r} is neither a duration such as 5m nor an RFC 3339 time with a zone",
            field=field,
        )
    try:
        return when.astimezone(dt.UTC)
    except OverflowError:  # 9999-12-31T23:59:59-23:59 is past the last representable time
        raise InvalidError(f"{field}: {text!r} is out of range", field=field) from None


def rfc3339_ns(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 in UTC, with all nine digits."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{fraction:09d}Z"


def epoch_ns(stamp: str) -> int:
    """RFC 3339 (UTC, up to nine fraction digits) as nanoseconds since the epoch."""
    match = STAMP.match(stamp)
    if match is None:
        raise ValueError(f"not an RFC 3339 UTC time: {stamp!r}")
    whole = dt.datetime.fromisoformat(match.group(1)).replace(tzinfo=dt.UTC)
    return int(whole.timestamp()) * 1_000_000_000 + int((match.group(2) or "").ljust(9, "0"))


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: before `end_ns`, less the `skip` lines at exactly `end_ns`
    already given (the store orders newest first, so a page ends on its oldest line), back to
    the first page's start (a relative `since` given again would have moved)."""

    end_ns: int
    skip: int
    filters: str  # the digest of what the first page asked, which later pages must repeat
    since_ns: int = 0

    def token(self) -> str:
        raw = json.dumps({"e": self.end_ns, "s": self.skip, "f": self.filters, "b": self.since_ns})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def of(cls, token: str, filters: str) -> Cursor:
        try:
            raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            cursor = cls(int(raw["e"]), int(raw["s"]), str(raw["f"]), int(raw["b"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidError("continue: not a token this API gave", field="continue") from exc
        span = cursor.end_ns - cursor.since_ns
        latest = _ns(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        if not 0 < span <= _ns_of(MAX_SEARCH_RANGE) or cursor.since_ns < 0:
            raise InvalidError("continue: not a token this API gave", field="continue")
        if cursor.end_ns > latest:
            raise InvalidError("continue: not a token this API gave", field="continue")
        if cursor.filters != filters or cursor.skip < 0 or cursor.skip > MAX_SEARCH_LIMIT * 10:
            raise InvalidError(
                "continue: the token belongs to another search (same since, until and filters "
                "are needed for its next page)",
                field="continue",
            )
        return cursor


@dataclass(frozen=True)
class LogSearch:
    """One page of a search: a bounded time range, structured filters, a line limit."""

    since: dt.datetime
    until: dt.datetime
    text: str | None = None
    regex: bool = False
    cluster: str | None = None
    pod: str | None = None
    container: str | None = None
    limit: int = DEFAULT_SEARCH_LIMIT
    cursor: Cursor | None = None

    @classmethod
    def of(
        cls,
        since: str | None,
        until: str | None = None,
        q: str | None = None,
        regex: bool = False,
        cluster: str | None = None,
        pod: str | None = None,
        container: str | None = None,
        limit: int | None = None,
        token: str | None = None,
        now: dt.datetime | None = None,
    ) -> LogSearch:
        now = now or dt.datetime.now(dt.UTC)
        if not since:
            raise InvalidError(
                "since: a search needs a start (e.g. 1h, or an RFC 3339 time); "
                f"the range may span {MAX_SEARCH_RANGE.days}d at most",
                field="since",
            )
        start = parse_instant(since, "since", now)
        end = parse_instant(until, "until", now) if until else now
        if end <= start:
            raise InvalidError("until: must be after since", field="until")
        if end - start > MAX_SEARCH_RANGE:
            raise InvalidError(
                f"since: the range may span {MAX_SEARCH_RANGE.days}d at most (asked {end - start})",
                field="since",
            )
        if q is not None and len(q) > MAX_TEXT:
            raise InvalidError(f"q: at most {MAX_TEXT} characters", field="q")
        if regex and not q:
            raise InvalidError("q: a regex search needs a pattern", field="q")
        if regex:
            try:
                re.compile(q or "")
            except re.error as exc:
                raise InvalidError(f"q: not a regular expression: {exc}", field="q") from exc
        for value, name in ((cluster, "cluster"), (pod, "pod"), (container, "container")):
            if value is not None:
                checked_name(value, name)
        search = cls(
            since=start,
            until=end,
            text=q or None,
            regex=regex,
            cluster=cluster,
            pod=pod,
            container=container,
            limit=_within(limit, DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT, "limit"),
        )
        if token:
            cursor = Cursor.of(token, search.digest())
            since_at = dt.datetime.fromtimestamp(cursor.since_ns // 1_000_000_000, dt.UTC)
            return dataclasses.replace(
                search,
                since=since_at + dt.timedelta(microseconds=cursor.since_ns % 1_000_000_000 // 1000),
                cursor=cursor,
            )
        return search

    def digest(self) -> str:
        """What a continue token must repeat: the filters (the range is the token's)."""
        asked = [
            self.text,
            self.regex,
            self.cluster,
            self.pod,
            self.container,
        ]
        return hashlib.sha256(json.dumps(asked).encode()).hexdigest()[:16]

    def logsql(self, namespace: str, app: str) -> str:
        """The store's query: the application's pods' files, then the text. Every part the
        caller gave is a validated name or an escaped literal; the tenant, namespace and
        clusters are not in it at all (the store's tenant header and `extra_filters`)."""
        # A Deployment's pods (the stable one's, a release's canary or preview): the name, the
        # pod template's hash and a suffix, both in Kubernetes' own alphabet (no vowels), so
        # app `web` never takes app `web-api`'s pods, nor `web-x-0` of a StatefulSet.
        own = (
            f"{app.replace('.', '[.]')}(-canary|-preview)?-{KUBE_RANDOM}{{1,10}}-{KUBE_RANDOM}{{5}}"
        )
        if self.pod is not None and not re.fullmatch(own, self.pod):
            raise NotFoundError(f"pod {self.pod} of application {app} not found")
        pod = self.pod.replace(".", "[.]") if self.pod else own
        container = self.container.replace(".", "[.]") if self.container else "[^/]+"
        file = f"/{namespace}_{pod}_[^/]+/{container}/[^/]+$"
        parts = [f"file:~{logsql_string(file)}"]
        if self.text is not None:
            pattern = self.text if self.regex else re2_literal(self.text)
            parts.append(f"_msg:~{logsql_string(pattern)}")
        return " AND ".join(parts) + " | fields _time, _msg, file, cluster"

    def window(self) -> tuple[str, str, int]:
        """The store's start, end (exclusive) and offset for this page."""
        if self.cursor is None:
            return rfc3339_ns(_ns(self.since)), rfc3339_ns(_ns(self.until) + 1), 0
        end = self.cursor.end_ns + 1
        return rfc3339_ns(_ns(self.since)), rfc3339_ns(end), self.cursor.skip


def _ns(when: dt.datetime) -> int:
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def _ns_of(span: dt.timedelta) -> int:
    return int(span.total_seconds()) * 1_000_000_000


@dataclass(frozen=True)
class FoundLine:
    """A line the store gave back, labelled from its file and the collector's fields."""

    stored_ns: int  # when the collector read it: the store's order, and the cursor's
    time: str  # when the container wrote it (its CRI stamp), else when it was read
    cluster: str
    pod: str
    container: str
    line: str

    def as_dict(self) -> dict[str, str]:
        """As a live line is given (the store's own order stays inside)."""
        return LogLine(self.time, self.cluster, self.pod, self.container, self.line).as_dict()


def found_line(row: dict[str, str]) -> FoundLine | None:
    """One row of the store's answer (JSON lines), or None when it is not a pod's line."""
    where = POD_LOG_FILE.search(row.get("file", ""))
    stored = row.get("_time", "")
    if where is None or STAMP.match(stored) is None:
        return None
    message = row.get("_msg", "")
    cri = CRI_LINE.match(message)
    stamp, text = (split_stamp(cri.group(1) + " x")[0], cri.group(3)) if cri else ("", message)
    return FoundLine(
        stored_ns=epoch_ns(stored),
        time=stamp or stored,
        cluster=row.get("cluster", ""),
        pod=where.group(2),
        container=where.group(4),
        line=text,
    )


def next_cursor(search: LogSearch, lines: list[FoundLine]) -> Cursor | None:
    """The cursor after a full page (a shorter page is the last)."""
    if len(lines) < search.limit or not lines:
        return None
    oldest = lines[-1].stored_ns
    same = sum(1 for entry in lines if entry.stored_ns == oldest)
    if search.cursor is not None and search.cursor.end_ns == oldest:
        same += search.cursor.skip
    return Cursor(oldest, same, search.digest(), _ns(search.since))


@dataclass(frozen=True)
class LogSource:
    """One placed namespace whose pods' files the collector ships, and where to."""

    cluster: str
    tenant: str
    account: int  # the store's AccountID for the tenant
    project: str
    environment: str
    namespace: str
    tenant_uid: str = ""  # a tenant deleted and made again anew is another tenant

    def fields(self) -> dict[str, str]:
        return {
            "tenant": self.tenant,
            "tenantUid": self.tenant_uid,
            "project": self.project,
            "environment": self.environment,
            "namespace": self.namespace,
            "cluster": self.cluster,
        }


STREAM_FIELDS = "tenant,cluster,namespace,file"


def collector_flags(sources: Iterable[LogSource], directory: dict[str, str]) -> list[str]:
    """vlagent's flags: per placed namespace a file pattern under its cluster's pod-log
    directory (/var/log/pods on a node), the store tenant of its Wharf tenant, and its labels.
    A namespace is `<tenant>--<project>-<env>`, and no name holds `_`: `<namespace>_*` is
    exactly its pods' directories."""
    flags: list[str] = []
    for source in sorted(sources, key=lambda s: (s.cluster, s.namespace)):
        if source.cluster not in directory:
            continue
        flags += [
            f"-fileCollector.glob={directory[source.cluster]}/{source.namespace}_*/*/*.log",
            "-fileCollector.excludeGlob=",
            f"-fileCollector.tenantID={source.account}:0",
            f"-fileCollector.extraFields={json.dumps(source.fields(), sort_keys=True)}",
        ]
    if flags:
        flags += [f"-fileCollector.streamFields={STREAM_FIELDS}", "-fileCollector.hostnameField="]
    return flags


# --- Retention per tenant (spec.logs.retention; docs/observability-logs.md) ------------------


def retention_filter(before: dt.datetime) -> str:
    """The store's delete filter: every line stamped before `before`. Made of a time alone,
    never of text a caller gave; which store tenant it deletes in is the request's header."""
    return f"_time:<{utc_seconds(before)}"


def utc_seconds(when: dt.datetime) -> str:
    """RFC 3339 in UTC to the second, the year always four digits."""
    stamp = when.astimezone(dt.UTC).replace(microsecond=0, tzinfo=None).isoformat()
    return f"{stamp}Z"


def retention_due(
    kept: dt.timedelta | None,
    last: Mapping[str, Any] | None,
    now: dt.datetime,
    every: dt.timedelta,
) -> dt.datetime | None:
    """Where a tenant's lines should be cut now (lines before it go), or None when nothing is
    due: its retention is the store's own (`kept` None: the store drops them itself), or the
    last cut ran with this retention less than `every` ago."""
    if kept is None:
        return None
    if last is not None and last.get("retention") == f"{kept.days}d":
        with contextlib.suppress(ValueError, TypeError):
            ran = dt.datetime.fromisoformat(str(last.get("time", "")).replace("Z", "+00:00"))
            if dt.timedelta(0) <= now - ran < every:
                return None
    return now.replace(microsecond=0) - kept


def deleting_accounts(tasks: Any) -> set[int]:
    """The store tenants (AccountIDs) a delete task is still running in, from the store's
    /delete/active_tasks answer (a list of tasks, each with its `tenant_ids`)."""
    accounts: set[int] = set()
    for task in tasks if isinstance(tasks, list) else []:
        for tenant in (task.get("tenant_ids") or []) if isinstance(task, dict) else []:
            with contextlib.suppress(AttributeError, KeyError, TypeError, ValueError):
                accounts.add(int(tenant["account_id"]))
    return accounts


def retention_record(
    kept: dt.timedelta, before: dt.datetime, now: dt.datetime, task: str
) -> dict[str, str]:
    """What the Tenant's status says of the last cut (status.logs.lastRetention)."""
    return {
        "time": utc_seconds(now),
        "retention": f"{kept.days}d",
        "before": utc_seconds(before),
        "task": task,
    }
