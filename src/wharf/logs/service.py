"""Live logs: an application's pods across its clusters, read through each cluster's API.

Who may read: anyone who may read the application (any role in its project, its tenant's
admins, platform admins) — the same check as `get` on the Application, so everyone else gets
404, as if it did not exist. Where Wharf reads: only the namespace the placement controller
placed for the application's project environment in each cluster (its status says Ready, so it
is the project's own and not another owner's of the same name), and only pods there labelled as
the application's. The namespace is never taken from the caller, and a pod name is a DNS name
(no path) that must be one of those pods: another tenant's pod cannot be named into a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Pod

from wharf.apps.model import APP_LABEL, APPLICATION, ApplicationSpec
from wharf.clusters.service import ClusterRules
from wharf.core.errors import InvalidError, NotFoundError, ThrottledError, WharfError
from wharf.identity.model import Principal
from wharf.kube.connections import ClusterConnections
from wharf.logs.model import (
    SEARCH_TIMEOUT,
    Cursor,
    FoundLine,
    LiveBounds,
    LogLine,
    LogSearch,
    LogSource,
    checked_name,
    deleting_accounts,
    found_line,
    merged,
    next_cursor,
    retention_due,
    retention_filter,
    retention_record,
    split_stamp,
)
from wharf.resources.service import ResourceService
from wharf.store.database import Database
from wharf.store.resources import ResourceStore, StoredResource
from wharf.tenancy.model import TENANT, namespace_name

# A followed stream asks again, at most this often, whether its caller may still read the
# application: a revoked token, a removed member or a deleted application ends it.
ACCESS_CHECK_SECONDS = 1.0
DENIED = "access to the application ended"
QUIET = LogLine("", "", "", "", "")  # no line came for a while: time to ask about access


# A followed stream holds a watch on every container it follows, opened with Wharf's
# credentials to the clusters: a user holds at most so many streams, and so many containers
# followed across them, at once (per server replica); more is 429.
MAX_FOLLOWED_PER_USER = 8
MAX_CONTAINERS_PER_USER = 200
# A slot outlives its stream's own bound by this much at most, should its end go unnoticed.
SLOT_GRACE_SECONDS = 5.0


class AccessEndedError(Exception):
    """The caller of a followed stream may no longer read the application."""


class FollowSlots:
    """The followed streams each user holds open, each weighing the containers it follows. A
    slot is given back when its stream ends, and lapses anyway once the stream's bound has
    passed: a response whose body never ran (the client left first) cannot hold one for ever."""

    def __init__(
        self,
        limit: int = MAX_FOLLOWED_PER_USER,
        containers: int = MAX_CONTAINERS_PER_USER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.containers = containers
        self.clock = clock
        self._held: dict[str, dict[int, tuple[float, int]]] = {}
        self._numbers = itertools.count()

    def _live(self, user: str) -> dict[int, tuple[float, int]]:
        now = self.clock()
        return {n: held for n, held in self._held.get(user, {}).items() if held[0] > now}

    def held(self, user: str) -> int:
        return len(self._live(user))

    def _refuse(self, user: str, held: dict[int, tuple[float, int]], why: str) -> ThrottledError:
        wait = max(1, math.ceil(min(until for until, _ in held.values()) - self.clock()))
        message = f"user {user!r} {why}: close one, or try again in {wait} s"
        return ThrottledError(message, retry_after=wait)

    def check(self, user: str) -> None:
        """Refuse at once a user who holds every stream already (before any work for it)."""
        held = self._live(user)
        if len(held) >= self.limit:
            raise self._refuse(user, held, self._full(len(held)))

    @staticmethod
    def _full(count: int) -> str:
        return f"already follows {count} log streams, the most one user may follow at once"

    def take(self, user: str, lifetime: float, containers: int = 1) -> Callable[[], None]:
        """A slot for a stream of at most `lifetime` seconds following `containers`
        containers, and what gives it back."""
        if containers > self.containers:
            raise InvalidError(
                f"the stream would follow {containers} containers, more than the "
                f"{self.containers} one user may follow at once: follow one cluster "
                "(cluster=) or one pod (pod=)",
                field="pod",
            )
        held = self._live(user)
        if len(held) >= self.limit:
            raise self._refuse(user, held, self._full(len(held)))
        following = sum(weight for _, weight in held.values())
        if following + containers > self.containers:
            raise self._refuse(
                user,
                held,
                f"already follows {following} containers' logs; {containers} more would pass "
                f"the {self.containers} one user may follow at once",
            )
        number = next(self._numbers)
        held[number] = (self.clock() + lifetime + SLOT_GRACE_SECONDS, containers)
        self._held[user] = held

        def give_back() -> None:
            mine = self._held.get(user, {})
            mine.pop(number, None)
            if not mine:
                self._held.pop(user, None)

        return give_back


@dataclass(frozen=True)
class Place:
    """An application's namespace in one cluster, and how to reach that cluster."""

    cluster: str
    namespace: str
    kubeconfig: dict[str, Any]


@dataclass(frozen=True)
class PodRef:
    cluster: str
    namespace: str
    pod: str
    containers: tuple[str, ...]


class LiveLogs:
    def __init__(
        self,
        resources: ResourceService,
        cluster_rules: ClusterRules,
        connections: ClusterConnections,
    ) -> None:
        self.resources = resources
        self.cluster_rules = cluster_rules
        self.connections = connections
        self.slots = FollowSlots()

    def places(
        self, p: Principal, tenant: str, app: str, cluster: str | None = None
    ) -> tuple[ApplicationSpec, list[Place]]:
        """The application's placed namespaces (in one cluster, or all); 404 unless the caller
        may read the application."""
        _, spec = self.resources.read(p, APPLICATION, tenant, app)
        namespace = namespace_name(tenant, spec.project, spec.environment)
        places = []
        with self.resources.db.reader() as session:
            store = ResourceStore(session)
            project = store.get("Project", tenant, spec.project)
            placed = [
                entry["cluster"]
                for entry in (project.status if project else {}).get("placements", [])
                if entry.get("environment") == spec.environment
                and entry.get("namespace") == namespace
                and entry.get("state") == "Ready"
            ]
            if cluster is not None and cluster not in placed:
                raise InvalidError(
                    f"cluster: {app} has no namespace placed on {cluster!r} "
                    f"(it is on: {', '.join(placed) or 'none'})",
                    field="cluster",
                )
            for name in placed if cluster is None else [cluster]:
                stored = store.get("Cluster", "", name)
                if stored is not None:
                    kubeconfig = self.cluster_rules.kubeconfig(stored)
                    places.append(Place(name, namespace, kubeconfig))
        return spec, places

    def client(self, place: Place) -> AsyncClient:
        # Apart from the controllers' client: a user's reads never hold up their work.
        return self.connections.client(place.cluster, place.kubeconfig, purpose="logs")

    def clients(self, places: list[Place]) -> dict[str, AsyncClient]:
        return {place.cluster: self.client(place) for place in places}

    async def pods(self, places: list[Place], app: str) -> list[PodRef]:
        """The application's pods in each place (a cluster that does not answer is left out)."""

        async def listed(place: Place) -> list[PodRef]:
            with contextlib.suppress(Exception):
                return [
                    _pod_ref(place, pod.to_dict())
                    async for pod in self.client(place).list(
                        Pod, namespace=place.namespace, labels={APP_LABEL: app}
                    )
                ]
            return []

        found = await asyncio.gather(*(listed(place) for place in places))
        return sorted((r for refs in found for r in refs), key=lambda r: (r.cluster, r.pod))

    async def targets(
        self,
        p: Principal,
        tenant: str,
        app: str,
        cluster: str | None = None,
        pod: str | None = None,
        container: str | None = None,
    ) -> tuple[list[Place], list[tuple[PodRef, str]]]:
        """(pod, container) pairs to read: the application's, or the one named (404 when it is
        not one of the application's pods)."""
        if pod is not None:
            checked_name(pod, "pod")
        if container is not None:
            checked_name(container, "container")
        _, places = await asyncio.to_thread(self.places, p, tenant, app, cluster)
        refs = await self.pods(places, app)
        if pod is not None:
            refs = [r for r in refs if r.pod == pod]
            if not refs:
                raise NotFoundError(f"pod {pod} of application {app} not found")
        pairs = [(r, c) for r in refs for c in r.containers if container is None or c == container]
        if container is not None and not pairs:
            raise NotFoundError(f"container {container} not found in the pods of {app}")
        return places, pairs

    def may_read(
        self,
        caller: Callable[[], Principal],
        tenant: str,
        app: str,
        cluster: str | None,
        started: list[Place],
    ) -> Callable[[], Awaitable[bool]]:
        """The check a followed stream repeats: the caller as the request says now (its
        token or session again), still allowed to read the application, which still lives
        in every namespace the stream reads (one made again elsewhere under the name is not
        the one whose pods are being read)."""
        reading = {(p.cluster, p.namespace) for p in started}

        def check() -> bool:
            try:
                _, now = self.places(caller(), tenant, app, cluster)
            except WharfError:
                return False
            return reading <= {(p.cluster, p.namespace) for p in now}

        async def allowed() -> bool:
            return await asyncio.to_thread(check)

        return allowed

    async def read(
        self, places: list[Place], pairs: list[tuple[PodRef, str]], bounds: LiveBounds
    ) -> list[LogLine]:
        """The last lines of every container, merged by time and cut to the bounds."""
        clients = self.clients(places)

        async def one(ref: PodRef, container: str) -> list[LogLine]:
            out: list[LogLine] = []
            size = 0
            with contextlib.suppress(Exception):
                lines = clients[ref.cluster].log(
                    ref.pod,
                    namespace=ref.namespace,
                    container=container,
                    since=int(bounds.since.total_seconds()),
                    tail_lines=bounds.lines,
                    timestamps=True,
                    newlines=False,
                )
                async for text in lines:
                    size += len(text)
                    if size > bounds.bytes:
                        break
                    out.append(_line(ref, container, text))
            return out

        async with asyncio.timeout(bounds.timeout):
            streams = await asyncio.gather(*(one(r, c) for r, c in pairs))
        return _within_bytes(merged(streams, bounds.lines), bounds.bytes)

    async def follow(
        self,
        places: list[Place],
        pairs: list[tuple[PodRef, str]],
        bounds: LiveBounds,
        allowed: Callable[[], Awaitable[bool]],
    ) -> AsyncIterator[LogLine]:
        """Every container's new lines as they come (after its last `lines`), until the
        timeout or the byte bound ends the stream; AccessEndedError once `allowed` (asked
        before a line goes out, at most every ACCESS_CHECK_SECONDS) says no more."""
        clients = self.clients(places)
        queue: asyncio.Queue[LogLine | None] = asyncio.Queue(maxsize=1000)

        async def pump(ref: PodRef, container: str) -> None:
            with contextlib.suppress(Exception):
                lines = clients[ref.cluster].log(
                    ref.pod,
                    namespace=ref.namespace,
                    container=container,
                    follow=True,
                    since=int(bounds.since.total_seconds()),
                    tail_lines=bounds.lines,
                    timestamps=True,
                    newlines=False,
                )
                async for text in lines:
                    await queue.put(_line(ref, container, text))

        tasks = [asyncio.create_task(pump(r, c)) for r, c in pairs]
        done = asyncio.gather(*tasks)
        done.add_done_callback(lambda _: queue.put_nowait(None))
        size = 0
        checked = time.monotonic()
        try:
            async with asyncio.timeout(bounds.timeout):
                while True:
                    # A quiet stream asks too: a revoked token does not keep Wharf's watches
                    # open (nor its slot) until the stream's bound.
                    try:
                        entry = await asyncio.wait_for(queue.get(), ACCESS_CHECK_SECONDS)
                    except TimeoutError:
                        entry = QUIET
                    if entry is None:
                        return
                    if time.monotonic() - checked >= ACCESS_CHECK_SECONDS:
                        if not await allowed():
                            raise AccessEndedError
                        checked = time.monotonic()
                    if entry is QUIET:
                        continue
                    size += len(entry.line)
                    if size > bounds.bytes:
                        return
                    yield entry
        except TimeoutError:
            return
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                await done


def _pod_ref(place: Place, pod: dict[str, Any]) -> PodRef:
    containers = tuple(c["name"] for c in pod.get("spec", {}).get("containers", []))
    return PodRef(place.cluster, place.namespace, pod["metadata"]["name"], containers)


def _line(ref: PodRef, container: str, text: str) -> LogLine:
    stamp, line = split_stamp(text)
    return LogLine(stamp, ref.cluster, ref.pod, container, line)


def _within_bytes(lines: list[LogLine], limit: int) -> list[LogLine]:
    """The newest lines that fit in `limit` bytes."""
    kept: list[LogLine] = []
    size = 0
    for entry in reversed(lines):
        size += len(entry.line)
        if size > limit:
            break
        kept.append(entry)
    return kept[::-1]


class LogsUnavailableError(WharfError):
    """The log store did not answer; the caller is told so, by name."""

    code = "logs-unavailable"
    status = 503


class LogStoreClient:
    """VictoriaLogs' query API. The tenant is the `AccountID` header, always the one Wharf
    derives from the caller's tenant; `extra_filters` (exact field values, JSON) pin the
    tenant, namespace and clusters again inside the store, for subqueries too."""

    def __init__(self, url: str | None, timeout: float = SEARCH_TIMEOUT) -> None:
        self.url = url.rstrip("/") if url else None
        self.timeout = timeout

    async def query(
        self,
        account: int,
        logsql: str,
        window: tuple[str, str, int],
        limit: int,
        pinned: dict[str, Any],
        regex: bool = False,
    ) -> list[dict[str, str]]:
        if not self.url:
            raise LogsUnavailableError(
                "log search is off: no log store is configured (WHARF_LOG_STORE_URL)"
            )
        start, end, offset = window
        params = {
            "query": logsql,
            "start": start,
            "end": end,
            "limit": str(limit),
            "offset": str(offset),
            "timeout": f"{self.timeout:g}s",
            "extra_filters": json.dumps(pinned, sort_keys=True),
        }
        headers = {"AccountID": str(account), "ProjectID": "0"}
        try:
            async with httpx.AsyncClient(timeout=self.timeout + 2) as http:
                answer = await http.post(
                    f"{self.url}/select/logsql/query", data=params, headers=headers
                )
        except httpx.HTTPError as exc:
            raise LogsUnavailableError(
                f"the log store (VictoriaLogs) did not answer: {type(exc).__name__}; "
                "live logs still work (without `--search`)"
            ) from exc
        if answer.status_code == 400 and regex:
            raise InvalidError(
                f"q: the log store refused the pattern: {answer.text[:300]}", field="q"
            )
        if answer.status_code != 200:
            raise LogsUnavailableError(
                f"the log store (VictoriaLogs) answered {answer.status_code}: {answer.text[:300]}"
            )
        return _rows(answer.text)

    async def delete_before(self, account: int, before: dt.datetime) -> str:
        """Start the store's task deleting the lines stamped before `before` in one store
        tenant (`account`, its headers) and nowhere else; the task's id."""
        if not self.url:
            raise LogsUnavailableError("no log store is configured (WHARF_LOG_STORE_URL)")
        if not 0 < account < 1 << 32:  # the store's AccountID is a uint32; 0 is its default
            raise ValueError(f"not a Wharf tenant's store tenant: {account}")
        headers = {"AccountID": str(account), "ProjectID": "0"}
        try:
            async with httpx.AsyncClient(timeout=self.timeout + 2) as http:
                answer = await http.post(
                    f"{self.url}/delete/run_task",
                    data={"filter": retention_filter(before)},
                    headers=headers,
                )
        except httpx.HTTPError as exc:
            raise LogsUnavailableError(
                f"the log store (VictoriaLogs) did not answer: {type(exc).__name__}"
            ) from exc
        if answer.status_code != 200:
            raise LogsUnavailableError(
                f"the log store (VictoriaLogs) answered {answer.status_code}: {answer.text[:300]}"
            )
        return str(answer.json().get("task_id", ""))

    async def deleting(self) -> set[int]:
        """The store tenants a delete task still runs in (the store's active tasks)."""
        try:
            async with httpx.AsyncClient(timeout=self.timeout + 2) as http:
                answer = await http.get(f"{self.url}/delete/active_tasks")
        except httpx.HTTPError as exc:
            raise LogsUnavailableError(
                f"the log store (VictoriaLogs) did not answer: {type(exc).__name__}"
            ) from exc
        if answer.status_code != 200:
            raise LogsUnavailableError(
                f"the log store (VictoriaLogs) answered {answer.status_code}: {answer.text[:300]}"
            )
        return deleting_accounts(answer.json())


def _rows(text: str) -> list[dict[str, str]]:
    """The store's answer: one JSON object a line."""
    rows: list[dict[str, str]] = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            row = json.loads(line)
            if isinstance(row, dict):
                rows.append(row)
    return rows


@dataclass(frozen=True)
class Kept:
    """How far back a tenant's lines are kept: its retention, and the oldest instant a
    search may reach now."""

    retention: dt.timedelta
    oldest: dt.datetime

    def as_dict(self, clamped: bool) -> dict[str, Any]:
        return {
            "period": f"{self.retention.days}d",
            "oldest": self.oldest.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "clamped": clamped,
        }


@dataclass(frozen=True)
class SearchAnswer:
    lines: list[FoundLine]
    cursor: Cursor | None
    kept: Kept
    clamped: bool  # `since` was before the oldest kept instant, and moved up to it


# A search may keep the shared store busy for its timeout: so many at once per user and per
# tenant (per server replica), or 429, so that one tenant cannot fill the store's queue.
MAX_SEARCHES_PER_USER = 4
MAX_SEARCHES_PER_TENANT = 8
SEARCH_RETRY_SECONDS = 2


class SearchSlots:
    """Searches under way, per user and per tenant."""

    def __init__(
        self, per_user: int = MAX_SEARCHES_PER_USER, per_tenant: int = MAX_SEARCHES_PER_TENANT
    ) -> None:
        self.per_user = per_user
        self.per_tenant = per_tenant
        self.users: dict[str, int] = {}
        self.tenants: dict[str, int] = {}

    @contextlib.contextmanager
    def held(self, user: str, tenant: str) -> Iterator[None]:
        if self.users.get(user, 0) >= self.per_user:
            raise ThrottledError(
                f"user {user!r} has {self.per_user} log searches under way, the most at once: "
                f"try again in {SEARCH_RETRY_SECONDS} s",
                retry_after=SEARCH_RETRY_SECONDS,
            )
        if self.tenants.get(tenant, 0) >= self.per_tenant:
            raise ThrottledError(
                f"tenant {tenant} has {self.per_tenant} log searches under way, the most at "
                f"once: try again in {SEARCH_RETRY_SECONDS} s",
                retry_after=SEARCH_RETRY_SECONDS,
            )
        self.users[user] = self.users.get(user, 0) + 1
        self.tenants[tenant] = self.tenants.get(tenant, 0) + 1
        try:
            yield
        finally:
            for counts, key in ((self.users, user), (self.tenants, tenant)):
                counts[key] -= 1
                if not counts[key]:
                    del counts[key]


class HistoryLogs:
    """Search over an application's collected logs, with live logs' access rules."""

    def __init__(
        self,
        live: LiveLogs,
        store: LogStoreClient,
        store_retention: dt.timedelta = dt.timedelta(days=7),
    ) -> None:
        self.live = live
        self.store = store
        self.searches = SearchSlots()
        self.store_retention = store_retention

    def account(self, tenant: str) -> tuple[int, str, dt.timedelta]:
        """The store's AccountID of a Wharf tenant (its row's id), the tenant's uid (SQLite
        may give a deleted tenant's row id to the next one, so its lines carry the uid too),
        and how long its lines are kept (spec.logs.retention, at most the store's)."""
        with self.live.resources.db.reader() as session:
            stored = ResourceStore(session).get("Tenant", "", tenant)
        if stored is None:
            raise NotFoundError(f"tenant {tenant} not found")
        return stored.id, stored.uid, TENANT.typed(stored).log_retention(self.store_retention)

    async def search(self, p: Principal, tenant: str, app: str, search: LogSearch) -> SearchAnswer:
        """One page, newest first, never older than the tenant's retention; 404 unless the
        caller may read the application."""
        spec, places = await asyncio.to_thread(self.live.places, p, tenant, app, search.cluster)
        account, uid, retention = await asyncio.to_thread(self.account, tenant)
        kept = Kept(retention, dt.datetime.now(dt.UTC).replace(microsecond=0) - retention)
        clamped = search.since < kept.oldest
        if clamped:
            search = dataclasses.replace(search, since=kept.oldest)
        if not places or search.until <= search.since:
            return SearchAnswer([], None, kept, clamped)
        namespace = namespace_name(tenant, spec.project, spec.environment)
        # Pinned by the store on every part of the query. The project and environment too:
        # `shop`/`prod-eu` and `shop-prod`/`eu` name the same namespace, one after the other.
        pinned = {
            "tenant": tenant,
            "tenantUid": uid,
            "project": spec.project,
            "environment": spec.environment,
            "namespace": namespace,
            "cluster": sorted(place.cluster for place in places),
        }
        with self.searches.held(p.user, tenant):
            rows = await self.store.query(
                account,
                search.logsql(namespace, app),
                search.window(),
                search.limit,
                pinned,
                search.regex,
            )
        lines = [entry for entry in map(found_line, rows) if entry is not None]
        lines.sort(key=lambda entry: entry.stored_ns, reverse=True)
        lines = lines[: search.limit]
        return SearchAnswer(lines, next_cursor(search, lines), kept, clamped)

    def sources(self) -> list[LogSource]:
        return log_sources(self.live.resources.db)


class LogRetention:
    """Deletes each tenant's lines older than its retention from the store, in its own store
    tenant only, at most once every `every` per tenant (and at once when its retention
    changes); the Tenant's status.logs.lastRetention says when it last ran."""

    def __init__(
        self,
        resources: ResourceService,
        store: LogStoreClient,
        store_retention: dt.timedelta,
        every: dt.timedelta,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.resources = resources
        self.store = store
        self.store_retention = store_retention
        self.every = every
        self.clock = clock

    def tenants(self) -> list[str]:
        with self.resources.db.reader() as session:
            return [t.name for t in ResourceStore(session).query("Tenant")]

    def _due(self, tenant: str) -> tuple[int, dt.timedelta, dt.datetime] | None:
        with self.resources.db.reader() as session:
            stored = ResourceStore(session).get("Tenant", "", tenant)
        if stored is None:
            return None
        kept = TENANT.typed(stored).log_retention(self.store_retention)
        shorter = kept if kept < self.store_retention else None
        last = (stored.status.get("logs") or {}).get("lastRetention")
        before = retention_due(shorter, last, self.clock(), self.every)
        return (stored.id, kept, before) if before is not None else None

    async def cut(self, tenant: str) -> None:
        """One tenant's reconcile: nothing when nothing is due (no store call, no write)."""
        if not self.store.url:
            return
        due = await asyncio.to_thread(self._due, tenant)
        if due is None:
            return
        account, kept, before = due
        if account in await self.store.deleting():
            return  # the last one still runs (a big store): one at a time, look again later
        task = await self.store.delete_before(account, before)
        record = retention_record(kept, before, self.clock(), task)

        def status(row: StoredResource) -> dict[str, Any]:
            if row.id != account:  # deleted and made again meanwhile: not the same tenant
                return row.status
            logs = {**(row.status.get("logs") or {}), "lastRetention": record}
            return {**row.status, "logs": logs}

        await asyncio.to_thread(self.resources.write_status, "Tenant", "", tenant, status)


def log_sources(db: Database) -> list[LogSource]:
    """What the collector ships: every namespace placed Ready, into its tenant's store tenant,
    labelled with tenant, project, environment, namespace and cluster."""
    with db.reader() as session:
        store = ResourceStore(session)
        accounts = {t.name: (t.id, t.uid) for t in store.query("Tenant")}
        found = []
        for project in store.query("Project"):
            if project.tenant not in accounts:
                continue
            for entry in project.status.get("placements", []):
                if entry.get("state") != "Ready":
                    continue
                found.append(
                    LogSource(
                        cluster=entry["cluster"],
                        tenant=project.tenant,
                        account=accounts[project.tenant][0],
                        tenant_uid=accounts[project.tenant][1],
                        project=project.name,
                        environment=entry["environment"],
                        namespace=entry["namespace"],
                    )
                )
    return found
