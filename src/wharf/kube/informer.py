"""A watch-backed cache of one resource type in one cluster: list, then watch, relist on error.

Every watch ends: the API server closes it after `watch_seconds` (timeoutSeconds), and the
client stops following when nothing has come for `WATCH_GRACE` seconds longer than that (a
frozen or partitioned server keeps the connection open but silent). Then the cache is rebuilt
by a relist, whose requests time out like any other: a silent partition is noticed within one
watch period and a request timeout, not never, and a quiet resource is relisted that often.

A cache holds what Wharf reads, not the server's bookkeeping: `managedFields` (often the
largest part of an object) and the last-applied annotation are dropped as objects come in.
Objects are indexed by namespace, so that one application's part is found without a scan.

The echo of Wharf's own write (its watch event, before or after the write's answer) wakes
nobody: writes go through `writing`, which holds the object's events while the write is under
way and tells afterwards only those that are not the write itself."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import structlog
from lightkube import AsyncClient
from lightkube.core.generic_client import ALL_NS
from lightkube.core.resource import NamespacedResource
from lightkube.operators import UnaryOperator

log = structlog.get_logger("wharf.kube.informer")
REPORT_EVERY = 300.0  # seconds between info lines about one informer's broken watch
WATCH_GRACE = 5.0  # seconds the client waits past a watch's timeoutSeconds

Handler = Callable[[str, dict[str, Any]], None]
Key = tuple[str, str]  # (namespace, name)
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without what no reader of a cache needs (in place; returned)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        annotations = meta.get("annotations")
        if annotations and LAST_APPLIED in annotations:
            annotations.pop(LAST_APPLIED)
    return obj


def _version(obj: dict[str, Any]) -> int | None:
    """The object's resourceVersion as a number (etcd's are), None when it is not one."""
    value = str(obj.get("metadata", {}).get("resourceVersion") or "")
    # ASCII digits of a sane length only: "²" is a digit to isdigit() and not to int(), and a
    # hostile server's 5,000-digit version would make int() raise.
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 20 else None


def _status_only(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether two versions of an object differ in their status alone (and in the version
    every write gives)."""
    if old.keys() - {"status"} != new.keys() - {"status"}:
        return False
    for field, value in new.items():
        if field == "metadata":
            before = old["metadata"]
            if not isinstance(value, dict) or not isinstance(before, dict):
                return False
            if value.keys() != before.keys() or any(
                value[k] != before[k] for k in value if k != "resourceVersion"
            ):
                return False
        elif field != "status" and value != old[field]:
            return False
    return True


class Informer:
    def __init__(
        self,
        client: AsyncClient,
        resource: Any,
        *,
        labels: dict[str, Any] | None = None,
        on_event: Handler | None = None,
        on_status: Handler | None = None,
        name: str = "",
        watch_seconds: int = 60,
    ) -> None:
        self.client = client
        self.watch_seconds = watch_seconds
        self.resource = resource
        self.labels = labels
        self.on_event = on_event
        # Told, when given, in place of on_event of a change to an object's status alone:
        # a reader to whom that is news of less weight than a change of what it wrote.
        self.on_status = on_status
        self.name = name
        self.items: dict[Key, dict[str, Any]] = {}
        self._by_namespace: dict[str, dict[str, dict[str, Any]]] = {}
        self.synced = asyncio.Event()
        # Namespaced kinds are watched in every namespace (a client's default is one).
        self._where = {"namespace": ALL_NS} if issubclass(resource, NamespacedResource) else {}
        self.error: str | None = None
        self._reported_at = -REPORT_EVERY  # when a broken watch was last logged at info
        self._writing: Counter[Key] = Counter()  # writes of ours under way, by object
        self._held: dict[Key, list[tuple[str, dict[str, Any]]]] = {}  # their events meanwhile
        self._wrote: dict[Key, int | None] = {}  # the version a write under way answered
        self._answers: dict[Key, dict[str, Any]] = {}  # and the object, as the cache keeps it

    @staticmethod
    def _key(obj: dict[str, Any]) -> tuple[str, str]:
        meta = obj.get("metadata", {})
        return meta.get("namespace") or "", meta.get("name", "")

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.items.get((namespace, name))

    def in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        return list(self._by_namespace.get(namespace, {}).values())

    def _shape(self, obj: dict[str, Any]) -> dict[str, Any]:
        """What the cache keeps of an object; a subclass keeps less. Every way in (list,
        watch, a write's answer) goes through here, so no path keeps whole objects."""
        return slim(obj)

    @contextlib.contextmanager
    def writing(self, obj: dict[str, Any]) -> Iterator[None]:
        """A write of ours to `obj` is under way (its answer goes to `remember`): the object's
        events are held until it ends, and then told unless they are the write's own echo.
        Each echo had queued its project or application once more for nothing: seeding 1,000
        projects left a second round of them queued, and an edit waited behind it."""
        key = self._key(obj)
        self._writing[key] += 1
        try:
            yield
        finally:
            self._writing[key] -= 1
            if self._writing[key] <= 0:
                del self._writing[key]
                wrote = self._wrote.pop(key, None)
                answer = self._answers.pop(key, None)
                held = self._held.pop(key, [])
                news = [e for e in held if wrote is None or _version(e[1]) != wrote]
                if news:  # the last says where the object is now, next to what we wrote
                    self._tell(*news[-1], before=answer, now=self.items.get(key))

    def remember(self, obj: dict[str, Any]) -> None:
        """Take an object a write returned, unless the cache already has a newer one (its
        watch event may come first): the next read sees the write without waiting."""
        key = self._key(obj)
        mine = _version(obj)
        shaped = self._shape(obj)
        if key in self._writing:
            self._wrote[key] = mine
            self._answers[key] = shaped
            deleted = [o for e, o in self._held.get(key, []) if e == "DELETED"]
            if any((_version(o) or 0) > (mine or 0) for o in deleted):
                return  # deleted after the write (its event came first): not put back
        cached = self.items.get(key)
        theirs = _version(cached) if cached is not None else None
        if cached is not None and (mine is None or theirs is None or theirs >= mine):
            return
        self._put(key, shaped)

    def _put(self, key: Key, obj: dict[str, Any]) -> None:
        self.items[key] = obj
        self._by_namespace.setdefault(key[0], {})[key[1]] = obj

    def _drop(self, key: Key) -> None:
        self.items.pop(key, None)
        names = self._by_namespace.get(key[0])
        if names is not None:
            names.pop(key[1], None)
            if not names:
                del self._by_namespace[key[0]]

    async def _list(self) -> str:
        items: dict[Key, dict[str, Any]] = {}
        listing = self.client.list(self.resource, labels=self.labels, **self._where)  # type: ignore[call-overload]
        async for item in listing:
            obj = self._shape(item.to_dict())
            items[self._key(obj)] = obj
        by_namespace: dict[str, dict[str, dict[str, Any]]] = {}
        for (namespace, name), obj in items.items():
            by_namespace.setdefault(namespace, {})[name] = obj
        self.items, self._by_namespace = items, by_namespace
        return str(listing.resourceVersion)

    async def _watch(self, version: str) -> None:
        """Follow changes from `version` until nothing has come for a watch period and a
        little more; the caller then relists."""
        watch = self.client.watch(  # type: ignore[call-overload]
            self.resource,
            labels=self.labels,
            resource_version=version,
            server_timeout=self.watch_seconds,
            **self._where,
        )
        quiet = self.watch_seconds + WATCH_GRACE
        loop = asyncio.get_running_loop()
        # Closed on the way out, so that its HTTP stream is released at once.
        async with contextlib.aclosing(watch):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(loop.time() + quiet) as deadline:
                    async for event, item in watch:
                        self._take(event, item.to_dict())
                        deadline.reschedule(loop.time() + quiet)

    def _take(self, event: str, obj: dict[str, Any]) -> None:
        key = self._key(obj)
        cached = self.items.get(key)
        if event == "DELETED":
            self._drop(key)
        else:
            self._put(key, self._shape(obj))
        if key in self._writing:
            # Told when the write ends. Two are enough: at most one of them is the write's
            # echo (its version is the write's alone), and the other says where it is now.
            held = self._held.setdefault(key, [])
            held.append((event, obj))
            del held[:-2]
            return
        version = _version(obj)
        if event != "DELETED" and version is not None and cached and _version(cached) == version:
            return  # a write of ours the cache has remembered already: nothing new
        self._tell(event, obj, before=cached, now=self.items.get(key))

    def _tell(
        self,
        event: str,
        obj: dict[str, Any],
        before: dict[str, Any] | None,
        now: dict[str, Any] | None,
    ) -> None:
        """Tell an event: to on_status if it changed the status alone (`before` → `now`, as
        the cache keeps them), else to on_event."""
        if (
            self.on_status
            and event == "MODIFIED"
            and before is not None
            and now is not None
            and _status_only(before, now)
        ):
            self.on_status(event, obj)
        elif self.on_event:
            self.on_event(event, obj)

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                version = await self._list()
                self.error = None
                self.synced.set()
                if self.on_event:
                    self.on_event("SYNCED", {})
                delay = 0.5
                await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                self.synced.clear()
                if self.on_event:
                    self.on_event("ERROR", {})
                # The first failure is news; its retries (every few seconds while a cluster is
                # away) are not, nor is a watch that breaks again just after it came back: the
                # cluster controller says when a cluster goes and comes back.
                news = time.monotonic() - self._reported_at >= REPORT_EVERY
                if news:
                    self._reported_at = time.monotonic()
                report = log.info if news else log.debug
                report("watch interrupted", informer=self.name, error=self.error, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)


def synced(informers: Iterable[Informer]) -> dict[str, Informer]:
    """The caches that have listed once (and are watching), by kind; a kind whose cache has
    not is read from the cluster."""
    return {i.resource.__name__: i for i in informers if i.synced.is_set()}


def matches(obj: dict[str, Any], selector: Mapping[str, Any]) -> bool:
    """Whether a cached object's labels match a selector of values and exists / not-exists
    operators (what Wharf's selectors use; anything else is refused, not guessed)."""
    labels = obj.get("metadata", {}).get("labels") or {}
    for key, want in selector.items():
        if isinstance(want, str):
            if labels.get(key) != want:
                return False
        elif isinstance(want, UnaryOperator) and want.op_name in ("exists", "not_exists"):
            if (key in labels) != (want.op_name == "exists"):
                return False
        else:
            raise TypeError(f"label selector {key}: {want!r} is not matched on a cache")
    return True


class ClusterWatches:
    """Informers per cluster, started once and replaced when the cluster's credentials change."""

    def __init__(self) -> None:
        self._watches: dict[str, tuple[str, list[Informer], list[asyncio.Task[None]]]] = {}
        # One replacement at a time per cluster: two workers replacing a cluster's set at
        # once would each start one, and the first one's watches would run on, unowned.
        self._replacing: dict[str, asyncio.Lock] = {}

    def clusters(self) -> set[str]:
        return set(self._watches)

    def informers(self, cluster: str) -> list[Informer]:
        known = self._watches.get(cluster)
        return known[1] if known else []

    async def ensure(
        self, cluster: str, fingerprint: str, make: Callable[[], list[Informer]]
    ) -> list[Informer]:
        known = self._watches.get(cluster)
        if known and known[0] == fingerprint:
            return known[1]
        async with self._replacing.setdefault(cluster, asyncio.Lock()):
            known = self._watches.get(cluster)
            if known and known[0] == fingerprint:
                return known[1]  # another worker replaced it while this one waited
            await self.drop(cluster)
            informers = make()
            tasks = [asyncio.create_task(i.run(), name=i.name) for i in informers]
            self._watches[cluster] = (fingerprint, informers, tasks)
            return informers

    async def drop(self, cluster: str) -> None:
        known = self._watches.pop(cluster, None)
        if known:
            for task in known[2]:
                task.cancel()
            for task in known[2]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def stop(self) -> None:
        for cluster in list(self._watches):
            await self.drop(cluster)
