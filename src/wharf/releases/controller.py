"""The release controller: moves each release through its waves, clusters and steps.

Level-triggered: every pass reads the release row, the application and the measurements
afresh and does the next thing that is due. Each transition is stored before it acts (a step
is recorded, then its objects are applied; a measurement is stored, then judged), and every
cluster write is a server-side apply that is skipped when the cluster already matches, so a
process killed anywhere resumes at the same step without doing a step's work twice.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from lightkube import AsyncClient
from lightkube.codecs import from_dict
from lightkube.resources.apps_v1 import Deployment, ReplicaSet
from lightkube.resources.core_v1 import Service
from lightkube.resources.networking_v1 import Ingress

from wharf.apps.model import (
    APP_LABEL,
    APPLICATION,
    RELEASE_ROLE,
    ApplicationSpec,
    BlueGreenStrategy,
    CanaryStep,
    canary_split,
    desired_objects,
)
from wharf.apps.service import app_labels, current_revision, rendered_for
from wharf.clusters.model import CLUSTER, routing_of
from wharf.clusters.service import ClusterRules
from wharf.core.controller import Controller
from wharf.core.errors import OutdatedSpecError
from wharf.core.net import OutboundPolicy, OutboundRefused, Target
from wharf.core.resources import set_condition
from wharf.kube.apply import ensure_cached, observe, prune
from wharf.kube.connections import ClusterConnections
from wharf.kube.informer import Informer
from wharf.network.model import GATEWAY_GROUP, route_name
from wharf.releases.model import (
    ANALYSIS_TEMPLATE,
    RELEASE_WEBHOOK,
    AnalysisTemplateSpec,
    Metric,
    ReleaseEvent,
    build_query,
    canary_replicas,
    extract,
    judge,
    resolve_waves_limited,
    verdict,
    web_url,
)
from wharf.releases.service import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    Notification,
    Release,
    ReleaseWebhookRules,
    StaleReleaseError,
    add_measurement,
    create_release,
    drop_releases,
    due_notifications,
    event_body,
    latest_release,
    mark_sent,
    measurements,
    now,
    save_release,
    sign,
    stable_after,
)
from wharf.resources.service import ResourceService
from wharf.store.resources import ResourceStore, StoredResource
from wharf.tenancy.model import (
    MANAGED_BY,
    PROJECT,
    TENANT_LABEL,
    ProjectSpec,
    namespace_name,
)

log = structlog.get_logger("wharf.releases")
Key = tuple[str, str]
CANARY = "canary"
PREVIEW = "preview"
TRACK = "wharf.io/track"  # in the canary's selector, so the two workloads never share pods
# The live Service's selector is pinned (blue-green) under a field manager of its own, so its
# managed fields tell a release's switch apart from delivery's writes. Delivery leaves a pinned
# selector alone: it applies only when the live object lacks a field it wants.
PIN_MANAGER = "wharf-release"
POD_HASH = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
BLUE_GREEN_STEPS = 3  # preview, switch, hold the old pods
NGINX = "nginx.ingress.kubernetes.io"
WAITING = ("WaitingPromote", "Inconclusive")
SETTLED = ("Promoted", "Failed", "RolledBack")
WORKERS = 8
REDELIVER_EVERY = 5.0  # seconds between asking delivery again while a promotion waits for it


@dataclass
class _StoreTurn:
    """One release row's stores: one at a time; `asked` and `stored` count the changes asked
    to be stored and those a committed write holds."""

    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    asked: int = 0
    stored: int = 0


@dataclass
class Snapshot:
    """What one pass works from, read in one transaction."""

    app: StoredResource
    spec: ApplicationSpec
    revision: int
    namespace: str
    waves: list[list[str]]
    limits: list[int | None]
    clusters: dict[str, StoredResource]
    rendered: list[dict[str, Any]]
    release: Release | None
    templates: dict[str, AnalysisTemplateSpec]
    deliveries: int = 0  # delivery's status writes of the application seen before the read


class ReleaseController:
    def __init__(
        self,
        service: ResourceService,
        clusters: ClusterRules,
        connections: ClusterConnections,
        prometheus_url: str | None,
        redeliver: Callable[[Key], None],
        resync: float = 30.0,
        outbound: OutboundPolicy | None = None,
        caches: Callable[[str], Mapping[str, Informer]] | None = None,
    ) -> None:
        self.service = service
        # Delivery's watch caches of a cluster (canary objects carry its labels): a step
        # whose objects are already in place asks the cluster nothing.
        self.caches = caches or (lambda _cluster: {})
        self.outbound = outbound or OutboundPolicy()
        self.clusters = clusters
        self.connections = connections
        self.prometheus_url = prometheus_url
        self.redeliver = redeliver
        # A pass mostly waits (on Prometheus, the clusters, the database): with a couple of
        # workers, concurrent releases would wait for each other's steps.
        self.controller = Controller(
            "releases", self.reconcile, self.list_keys, resync=resync, workers=WORKERS
        )
        self.writes = 0
        self.http = httpx.AsyncClient(timeout=5)
        self._nudged: dict[Key, float] = {}
        self._awaiting: set[Key] = set()  # releases waiting for delivery (a route, a rollout)
        self._asked: dict[Key, tuple[str, int, int]] = {}  # the step delivery was last asked for
        self._wakes: dict[Key, asyncio.TimerHandle] = {}  # each release's one timed look
        self._deliveries: dict[Key, int] = {}  # delivery's status writes, per application
        self._store_turns: dict[int, _StoreTurn] = {}
        self.stores = 0  # writes of release rows (a test's count)

    async def list_keys(self) -> Iterable[Key]:
        def keys() -> list[Key]:
            with self.service.db.reader() as session:
                apps = ResourceStore(session).query("Application")
                return [(a.tenant, a.name) for a in apps if _released(a)]

        return await asyncio.to_thread(keys)

    def _load(self, key: Key) -> Snapshot | None:
        with self.service.db.reader() as session:
            store = ResourceStore(session)
            app = store.get("Application", key[0], key[1])
            if app is None or app.deleting_since is not None:
                # Being deleted, it is delivery's to take out of the clusters, canary and all.
                if latest_release(session, key[0], key[1]) is not None:
                    self._forget(key)
                return None
            spec = APPLICATION.typed(app)
            release = latest_release(session, key[0], key[1])
            if spec.strategy.type == "rolling" and (release is None or release.done):
                return None  # nothing of a release to do or to undo
            project = store.get("Project", key[0], spec.project)
            project_spec = PROJECT.typed(project) if project else ProjectSpec()
            envs = {e.name: e.clusters for e in project_spec.environments}
            targets = envs.get(spec.environment, [])
            clusters = {c.name: c for c in store.query("Cluster")}
            labels = {n: c.labels for n, c in clusters.items()}
            limited = resolve_waves_limited(spec.strategy.waves, targets, labels)
            templates = {}
            for step in spec.strategy.canary.steps if spec.strategy.canary else []:
                for name in step.analysis.templates if step.analysis else []:
                    stored = store.get("AnalysisTemplate", key[0], name)
                    if stored is not None:
                        templates[name] = ANALYSIS_TEMPLATE.typed(stored)
            return Snapshot(
                app=app,
                spec=spec,
                revision=current_revision(session, key[0], key[1]),
                namespace=namespace_name(key[0], spec.project, spec.environment),
                waves=[members for members, _ in limited],
                limits=[limit for _, limit in limited],
                clusters=clusters,
                rendered=rendered_for(session, spec),
                release=release,
                templates=templates,
            )

    def _forget(self, key: Key) -> None:
        """The application is gone: so are its releases (its objects go with delivery's)."""
        with self.service.db.session() as session:
            drop_releases(session, key[0], key[1])

    async def reconcile(self, key: Key) -> None:
        deliveries = self._deliveries.get(key, 0)
        snap = await asyncio.to_thread(self._load, key)
        if snap is None:
            self._let_go(key)
            return
        snap.deliveries = deliveries
        if snap.spec.strategy.type == "rolling":
            await self._stop_for_rolling(key, snap)
            return
        release = snap.release
        if release is None or release.revision < snap.revision:
            release = await self._start(key, snap, release)
            if release is None:
                return  # the application went meanwhile
        if release.revision != snap.revision:
            return
        if release.done:
            await self._clean_up(key, snap, release)
            return
        if release.paused:
            return
        try:
            wait = await self._advance(key, snap, release)
        except StaleReleaseError:
            self.controller.queue.add(key)  # a person acted meanwhile: look again
            return
        self._wake(key, wait)

    def _let_go(self, key: Key) -> None:
        """No release to drive (the application is gone, or rolls): what was kept of it goes,
        so these maps hold only applications in a release, not every one ever seen."""
        self._deliveries.pop(key, None)
        self._asked.pop(key, None)
        self._nudged.pop(key, None)
        self._awaiting.discard(key)
        self._wake(key, None)

    def _wake(self, key: Key, wait: float | None) -> None:
        """Look at the release again in `wait` seconds (None: when an event says so). A pass
        reads the whole release, so its wait replaces any earlier one: timers set by passes
        that events caused would otherwise add up, each waking the release on its own."""
        earlier = self._wakes.pop(key, None)
        if earlier is not None:
            earlier.cancel()
        if wait is not None:
            loop = asyncio.get_running_loop()
            self._wakes[key] = loop.call_later(wait, self._woken, key)

    def _woken(self, key: Key) -> None:
        self._wakes.pop(key, None)
        self.controller.queue.add(key)

    async def _stop_for_rolling(self, key: Key, snap: Snapshot) -> None:
        """The strategy went back to rolling mid-release: the release is superseded and what
        it put in the clusters goes (delivery now applies the spec everywhere)."""
        release = snap.release
        if release is None or release.done:
            return
        release.phase = "Superseded"
        release.state["message"] = "the strategy is rolling now"
        await self._store(release)
        await self._clean_up(key, snap, release)

    async def _start(self, key: Key, snap: Snapshot, previous: Release | None) -> Release | None:
        """A new revision: the release before it (if under way) is superseded and its canaries
        go; the new release starts from the last revision that completed."""
        if previous is not None and not previous.done:
            previous.phase = "Superseded"
            await asyncio.to_thread(self._save, previous)
            await self._clean_up(key, snap, previous)
        stable = stable_after(previous, snap.revision)
        clusters = {c: {"phase": "Pending", "step": 0} for wave in snap.waves for c in wave}
        state = {
            "waves": snap.waves,
            "maxParallel": snap.limits,
            "wave": 0,
            "clusters": clusters,
            "message": "",
        }
        if stable == 0:
            state["message"] = "the first revision is delivered as it is"

        def create() -> Release | None:
            with self.service.db.session() as session:
                # Under the application row's lock: a delete that committed since the snapshot
                # was read (it drops the releases in its own transaction) leaves nothing to
                # start, and none is left behind for an application made again under the name.
                if ResourceStore(session).get("Application", key[0], key[1], lock=True) is None:
                    return None
                return create_release(session, key[0], key[1], snap.revision, stable, state)

        release = await asyncio.to_thread(create)
        if release is None:
            return None
        log.info("release started", app=key, revision=snap.revision, stable=stable)
        # No redelivery: the write that made the revision queued delivery, which pins the
        # stable workloads to `stable` already (see service.pinned), with or without this row.
        return release

    def _save(self, release: Release) -> None:
        release.state["conditions"] = _conditions(release)
        with self.service.db.session() as session:
            save_release(session, release)

    async def _store(self, release: Release) -> None:
        """Store the release as it is now. A pass advances a wave's clusters at once, and each
        stores the one shared row: one at a time (else two writes of the same version race,
        and one pass is thrown away as stale), each from a copy taken in the event loop (the
        others go on changing the state meanwhile). Stores asked for while one is under way
        are done by one write (group commit): it copies the state after all their changes,
        and each caller returns only once a write holding its change has committed."""
        turn = self._store_turns.setdefault(release.id, _StoreTurn())
        turn.asked += 1
        mine = turn.asked
        async with turn.lock:
            if turn.stored >= mine:
                return  # a write that began after this change was made carried it
            upto = turn.asked
            copied = dataclasses.replace(
                release, state=copy.deepcopy(release.state), events=list(release.events)
            )
            release.events.clear()  # queued with this save, in its transaction
            await asyncio.to_thread(self._save, copied)
            release.version = copied.version
            release.state["conditions"] = copied.state["conditions"]
            turn.stored = upto
            self.stores += 1

    async def _advance(self, key: Key, snap: Snapshot, release: Release) -> float | None:
        state = release.state
        wave = int(state.get("wave", 0))
        if wave >= len(state["waves"]):
            return None
        members = state["waves"][wave]
        waits = await asyncio.gather(
            *(self._advance_cluster(key, snap, release, c) for c in _startable(release, wave))
        )
        phases = [release.clusters[c]["phase"] for c in members]
        strategy = snap.spec.strategy
        if "Failed" in phases and strategy.onFailure == "rollbackAll":
            failed = [c for c in members if release.clusters[c]["phase"] == "Failed"]
            release.phase = "Failed"
            state["message"] = f"analysis failed in {', '.join(failed)}; rolled back"
            for cluster in release.clusters.values():
                if cluster["phase"] not in ("Pending", "Failed"):
                    cluster["phase"] = "RolledBack"
            announce(release, "rolledBack", clusters=failed, message=state["message"])
            await self._store(release)
            self.redeliver(key)
            await self._clean_up(key, snap, release)
            return None
        if not all(p in SETTLED for p in phases):
            if any(release.clusters[c]["phase"] == "Pending" for c in _startable(release, wave)):
                return 0.0  # a cluster settled and freed a place in the wave: start the next
            pending = [w for w in waits if w is not None]
            return min(pending) if pending else None
        return await self._next_wave(release, strategy.bakeSeconds)

    async def _next_wave(self, release: Release, bake: int) -> float | None:
        state = release.state
        done_at = state.get("waveDoneAt")
        if done_at is None:
            state["waveDoneAt"] = now().isoformat()
            await self._store(release)
            if bake > 0:
                return float(bake)
        elif (left := bake - _since(done_at)) > 0:
            return left
        state["wave"] = int(state["wave"]) + 1
        state["waveDoneAt"] = None
        if state["wave"] >= len(state["waves"]):
            failed = [n for n, c in release.clusters.items() if c["phase"] == "Failed"]
            release.phase = "Failed" if failed else "Succeeded"
            state["message"] = (
                f"failed in {', '.join(failed)}" if failed else "promoted in every cluster"
            )
            announce(release, "completed", message=state["message"])
        await self._store(release)
        return None if release.done else 0.0

    async def _advance_cluster(
        self, key: Key, snap: Snapshot, release: Release, name: str
    ) -> float | None:
        """Do what is due in one cluster; the seconds until something is due again."""
        st = release.clusters[name]
        steps = snap.spec.strategy.canary.steps if snap.spec.strategy.canary else []
        blue_green = snap.spec.strategy.type == "blueGreen"
        count = BLUE_GREEN_STEPS if blue_green else len(steps)
        while True:
            phase = st["phase"]
            if phase == "Pending":
                _enter(st, 0, "Progressing", steps)
                await self._store(release)
                continue
            if phase in WAITING or phase in SETTLED:
                return None
            if phase == "Promoting":
                return await self._finish_promotion(key, snap, release, name)
            index = int(st["step"])
            if index >= count:
                st["phase"] = "Promoting"
                await self._store(release)
                self._awaiting.add(key)  # before delivery can report back
                self.redeliver(key)
                return REDELIVER_EVERY
            if blue_green:
                wait = await self._blue_green_step(key, snap, release, name, index)
            else:
                wait = await self._run_step(key, snap, release, name, index, steps[index])
            if wait is not None:
                return wait

    async def _blue_green_step(
        self, key: Key, snap: Snapshot, release: Release, name: str, index: int
    ) -> float | None:
        """0: the preview beside the live pods (the live Service pinned to them); 1: switch
        the live Service to the preview pods; 2: keep the old pods for the delay."""
        strategy = snap.spec.strategy.blueGreen or BlueGreenStrategy()
        st = release.clusters[name]
        client = self._client(snap, name)
        if index == 0:
            await self._pin_live(snap, name, client, PREVIEW, to_preview=False)
            owner = {MANAGED_BY: "wharf", TENANT_LABEL: key[0], APP_LABEL: key[1]}
            caches = self.caches(name)
            for obj in release_objects(key, snap, name, PREVIEW, None, 100):
                wrote, _ = await ensure_cached(client, caches.get(obj["kind"]), obj, owner)
                self.writes += int(wrote)
            if strategy.autoPromote:
                _enter(st, 1, "Progressing")
            else:
                st["phase"] = "WaitingPromote"
                st["message"] = "the preview is up; promote to switch the live Service"
                announce(release, "paused", cluster=name, step=index, message=st["message"])
            await self._store(release)
            return None
        if index == 1:
            await self._pin_live(snap, name, client, PREVIEW, to_preview=True)
            _enter(st, 2, "Progressing")
            await self._store(release)
            return None
        left = strategy.scaleDownDelaySeconds - _since(st["stepStartedAt"])
        if left > 0:
            return left
        _enter(st, 3, "Progressing")
        await self._store(release)
        return None

    async def _pin_live(
        self, snap: Snapshot, name: str, client: AsyncClient, role: str, to_preview: bool
    ) -> None:
        """Point the live Service at the preview pods, or at the stable workload's current
        pods (by their pod-template-hash): a selector change, no pod is made or removed."""
        for service, deployment in _live(snap, name):
            base = dict(service["spec"].get("selector") or {})
            if to_preview:
                extra = {TRACK: role}
            else:
                extra = {POD_HASH: await _current_hash(client, snap.namespace, deployment)}
            await self._set_selector(client, snap.namespace, service, {**base, **extra})

    async def _unpin_live(self, snap: Snapshot, name: str, client: AsyncClient) -> None:
        """Give the live Service back the selector the application renders. (A Service's
        selector is an atomic map: it is set whole, never dropped, or the Service would
        select nothing until delivery came by.)"""
        for service, _ in _live(snap, name):
            base = dict(service["spec"].get("selector") or {})
            await self._set_selector(client, snap.namespace, service, base)

    async def _set_selector(
        self,
        client: AsyncClient,
        namespace: str,
        service: dict[str, Any],
        selector: dict[str, str],
    ) -> None:
        meta = {"name": service["metadata"]["name"], "namespace": namespace}
        current = await observe(client, {**service, "metadata": meta})
        if current is None:
            return
        if (current.get("spec", {}).get("selector") or {}) == selector:
            return  # already so: no write
        obj = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"selector": selector},
        }
        await client.apply(from_dict(obj), field_manager=PIN_MANAGER, force=True)
        self.writes += 1

    async def _run_step(
        self, key: Key, snap: Snapshot, release: Release, name: str, index: int, step: CanaryStep
    ) -> float | None:
        """Run one step; None when it is done (the cluster moved on or stopped), else the
        seconds to wait before looking again."""
        st = release.clusters[name]
        steps = snap.spec.strategy.canary.steps if snap.spec.strategy.canary else []
        if _sets_canary(step):
            if st.get("applying") != index:  # recorded first, then applied
                _record_applying(st, index, step)
                await self._store(release)
            weight = st.get("weight", 0)
            await self._apply_canary(key, snap, name, step.setReplicas, int(weight))
            if not await self._shifted(key, snap, name, int(weight)):
                # Delivery writes the route, then its status, which wakes the release (see
                # `delivered`); the wait is the fallback for another replica's delivery.
                self._ask_delivery(key, (name, index, int(weight)))
                return self._await_delivery(key, snap)
            _enter(st, index + 1, "Progressing", steps)
            announce(release, "stepPassed", cluster=name, step=index, weight=weight)
            await self._store(release)
            return None
        if step.pause is not None:
            if step.pause.duration is None:
                st["phase"] = "WaitingPromote"
                st["message"] = "paused until promoted"
                announce(release, "paused", cluster=name, step=index, message=st["message"])
                await self._store(release)
                return None
            left = step.pause.duration - _since(st["stepStartedAt"])
            if left > 0:
                return left
            _enter(st, index + 1, "Progressing", steps)
            announce(release, "stepPassed", cluster=name, step=index)
            await self._store(release)
            return None
        assert step.analysis is not None
        outcome, wait = await self._analyse(snap, release, name, index, step)
        if outcome == "Running":
            return wait
        if outcome == "Successful":
            _enter(st, index + 1, "Progressing", steps)
            announce(release, "stepPassed", cluster=name, step=index)
        else:
            st["phase"] = outcome  # Failed, or Inconclusive: waits for a person
            st["message"] = f"analysis at step {index} was {outcome.lower()}"
            if outcome == "Inconclusive":
                announce(release, "paused", cluster=name, step=index, message=st["message"])
            elif snap.spec.strategy.onFailure == "clusterOnly":  # else the release rolls back
                announce(release, "rolledBack", cluster=name, step=index, message=st["message"])
        await self._store(release)
        if outcome == "Failed":
            self.redeliver(key)  # its route, if it carries a split, goes back to stable alone
            await self._remove_canary(key, snap, name)
        return None

    async def _analyse(
        self, snap: Snapshot, release: Release, cluster: str, index: int, step: CanaryStep
    ) -> tuple[str, float]:
        """Take the measurements that are due (each stored before it is judged) and say what
        the step's analysis adds up to."""
        assert step.analysis is not None
        started = _parse(release.clusters[cluster]["stepStartedAt"])
        taken = [
            m
            for m in await asyncio.to_thread(self._measurements, release.id, cluster, index)
            if _parse(m["at"]) >= started.replace(microsecond=started.microsecond // 1000 * 1000)
        ]  # this run of the step only: a retried release measures again
        verdicts: list[str] = []
        wait = 1.0
        builtin = {
            "app": snap.app.name,
            "cluster": cluster,
            "revision": str(release.revision),
            "namespace": snap.namespace,
        }
        for name in step.analysis.templates:
            template = snap.templates.get(name)
            if template is None:
                verdicts.append("Failed")  # deleted since: never a pass
                continue
            args = {**template.args, **step.analysis.args, **builtin}
            for metric in template.metrics:
                mine = [m for m in taken if (m["template"], m["metric"]) == (name, metric.name)]
                outcomes = [m["phase"] for m in mine]
                result = verdict(metric, outcomes)
                if result == "Running":
                    due = (
                        started + dt.timedelta(seconds=metric.initialDelay)
                        if not mine
                        else _parse(mine[-1]["at"]) + dt.timedelta(seconds=metric.interval)
                    )
                    left = (due - now()).total_seconds()
                    if left <= 0:
                        value, message = await self._measure_metric(metric, args, snap.namespace)
                        outcome = judge(metric, value)
                        await asyncio.to_thread(
                            self._record,
                            release,
                            cluster,
                            index,
                            name,
                            metric.name,
                            outcome,
                            value,
                            message,
                        )
                        result = verdict(metric, [*outcomes, outcome])
                        left = metric.interval
                    wait = min(wait, max(left, 0.1))
                verdicts.append(result)
        for final in ("Failed", "Inconclusive"):
            if final in verdicts:
                return final, wait
        return ("Successful" if all(v == "Successful" for v in verdicts) else "Running"), wait

    def _measurements(self, release_id: int, cluster: str, step: int) -> list[dict[str, Any]]:
        with self.service.db.reader() as session:
            found = measurements(session, release_id)
        return [
            {**m, "at": m["time"]} for m in found if (m["cluster"], m["step"]) == (cluster, step)
        ]

    def _record(self, release: Release, cluster: str, step: int, *values: Any) -> None:
        with self.service.db.session() as session:
            add_measurement(session, release, cluster, step, *values)

    async def _measure_metric(
        self, metric: Metric, args: dict[str, str], namespace: str
    ) -> tuple[float | None, str]:
        if metric.web is not None:
            return await self._measure_web(web_url(metric, args), metric.web.jsonPath)
        return await self._measure(build_query(metric, args, namespace))

    async def _measure_web(self, url: str, path: str) -> tuple[float | None, str]:
        """One GET of a web check, at the address its URL was checked at; an error (refused,
        unreachable, not 2xx, no number at the path) is never a pass."""
        try:
            target = self.outbound.target(url)
        except OutboundRefused as exc:
            return None, f"refused: {exc}"[:300]
        try:
            answer = await send_to(self.http, target, "GET", b"", {"Accept": "application/json"})
            document = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            return None, f"unreachable: {type(exc).__name__}: {exc}"[:300]
        if not answer.is_success:
            return None, f"the web check answered {answer.status_code}"
        value = extract(document, path)
        return (None, f"no number at {path}") if value is None else (value, "")

    async def _measure(self, query: str) -> tuple[float | None, str]:
        """One instant query; Prometheus down, refusing, or with no data is an error."""
        if not self.prometheus_url:
            return None, "no Prometheus is configured (WHARF_PROMETHEUS_URL)"
        try:
            answer = await self.http.get(
                f"{self.prometheus_url}/api/v1/query", params={"query": query}
            )
            body = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            return None, f"Prometheus unreachable: {type(exc).__name__}: {exc}"[:300]
        if answer.status_code != 200 or body.get("status") != "success":
            return None, f"Prometheus answered {answer.status_code}: {body.get('error', '')}"
        result = body.get("data", {}).get("result", [])
        if not result:
            return None, "no data"
        try:
            return float(result[0]["value"][1]), ""
        except (KeyError, IndexError, TypeError, ValueError):
            return None, "not a number"

    async def _finish_promotion(
        self, key: Key, snap: Snapshot, release: Release, name: str
    ) -> float | None:
        """The stable workload runs the new revision once delivery reports it Available
        there; then the canary goes."""
        delivered = (snap.app.status.get("clusters") or {}).get(name, {})
        if delivered.get("revision") != release.revision or delivered.get("state") != "Available":
            # Delivery's status write wakes the release (see `delivered`); the wait is the
            # fallback for a cluster another replica delivers to, not a 0.5 s poll.
            self._nudge_delivery(key)
            return self._await_delivery(key, snap)
        if snap.spec.strategy.type == "blueGreen":
            await self._unpin_live(snap, name, self._client(snap, name))
        await self._remove_canary(key, snap, name)
        release.clusters[name]["phase"] = "Promoted"
        await self._store(release)
        return None

    def _await_delivery(self, key: Key, snap: Snapshot) -> float:
        """Wait for delivery's next status write; at once if one came since the pass read
        the application (its wake-up found no waiter)."""
        if self._deliveries.get(key, 0) != snap.deliveries:
            return 0.0
        self._awaiting.add(key)
        return REDELIVER_EVERY

    def delivered(self, key: Key) -> None:
        """Delivery wrote the application's status: a step waiting for it (a route's split,
        a promotion's rollout) looks now."""
        self._deliveries[key] = self._deliveries.get(key, 0) + 1
        if key in self._awaiting:
            self._awaiting.discard(key)  # added again by a pass that still waits
            self.controller.queue.add(key)

    def _ask_delivery(self, key: Key, step: tuple[str, int, int]) -> None:
        """A route waits for a weight delivery has not written: ask at once for a step not
        asked for yet (its weight is stored), else now and then only."""
        if self._asked.get(key) != step:
            self._asked[key] = step
            self._nudged[key] = asyncio.get_running_loop().time()
            self.redeliver(key)
        else:
            self._nudge_delivery(key)

    def _nudge_delivery(self, key: Key) -> None:
        """Delivery was asked when the cluster entered Promoting, and its watches follow the
        rollout; while the release waits for it, ask again now and then only (each delivery
        reads every object of the application in every cluster)."""
        at = asyncio.get_running_loop().time()
        if at - self._nudged.get(key, -REDELIVER_EVERY) >= REDELIVER_EVERY:
            self._nudged[key] = at
            self.redeliver(key)

    async def _clean_up(self, key: Key, snap: Snapshot, release: Release) -> None:
        """No canary is left where a finished release touched a cluster (a list, no write,
        when there is none)."""
        for name, cluster in release.clusters.items():
            if cluster.get("phase") == "Pending":
                continue
            # Whatever the strategy is now: a preview left by an earlier one goes too.
            await self._switch_back(key, snap, name)
            await self._remove_canary(key, snap, name)
        self._store_turns.pop(release.id, None)

    async def _switch_back(self, key: Key, snap: Snapshot, name: str) -> None:
        """Blue-green rollback: the live Service goes back to the stable pods at once (a
        selector change, no new pod), then the preview goes, then the pin."""
        client = self._client(snap, name)
        previews = [o for o in release_objects(key, snap, name, PREVIEW, None, 100)]
        exists = [await observe(client, o) for o in previews if o["kind"] == "Deployment"]
        if any(e is not None for e in exists):
            await self._pin_live(snap, name, client, PREVIEW, to_preview=False)
            await self._remove_canary(key, snap, name)
        await self._unpin_live(snap, name, client)

    def _client(self, snap: Snapshot, name: str) -> Any:
        """The cluster's client, from the pass's own read of the clusters (no read per call)."""
        cluster = snap.clusters.get(name)
        if cluster is None:
            raise LookupError(f"cluster {name} is not registered")
        return self.connections.client(name, self.clusters.kubeconfig(cluster))

    async def _apply_canary(
        self, key: Key, snap: Snapshot, name: str, replicas: int | None, weight: int
    ) -> None:
        client = self._client(snap, name)
        owner = {MANAGED_BY: "wharf", TENANT_LABEL: key[0], APP_LABEL: key[1]}
        # At once: none of them refers to another in a way the API server checks, and one
        # after another each step waited a round trip per object on a busy machine.
        caches = self.caches(name)
        results = await asyncio.gather(
            *(
                ensure_cached(client, caches.get(obj["kind"]), obj, owner)
                for obj in release_objects(key, snap, name, CANARY, replicas, weight)
            )
        )
        self.writes += sum(int(wrote) for wrote, _ in results)

    async def _shifted(self, key: Key, snap: Snapshot, name: str, weight: int) -> bool:
        """Whether the host's HTTPRoute gives the canary its weight in the cluster (True where
        no HTTPRoute carries a split). Delivery writes that route, the one writer of it, with
        the weight the release stored (service.pinned): the step waits until it is there."""
        split = canary_split(snap.spec, snap.rendered, weight)
        cluster = snap.clusters.get(name)
        if split is None or cluster is None:
            return True
        routing = routing_of(CLUSTER.typed(cluster).routing, cluster.status.get("apis") or {})
        if routing.gateway is None:
            return True
        meta = {"name": route_name(key[1], split.host), "namespace": snap.namespace}
        route = {"apiVersion": f"{GATEWAY_GROUP}/v1", "kind": "HTTPRoute", "metadata": meta}
        live = await observe(self._client(snap, name), route)
        refs = [
            ref
            for rule in (live or {}).get("spec", {}).get("rules", [])
            for ref in rule.get("backendRefs", [])
        ]
        return any(r.get("name") == split.canary and r.get("weight") == weight for r in refs)

    async def _remove_canary(self, key: Key, snap: Snapshot, name: str) -> None:
        client = self._client(snap, name)
        labels: dict[str, Any] = {APP_LABEL: key[1], RELEASE_ROLE: None, TENANT_LABEL: key[0]}
        for resource in (Ingress, Service, Deployment):
            removed = await prune(client, resource, snap.namespace, labels, set())
            self.writes += len(removed)

    async def stop(self) -> None:
        await self.http.aclose()


def _live(snap: Snapshot, cluster: str) -> list[tuple[dict[str, Any], str]]:
    """(live Service, the stable Deployment it fronts) as the application renders them."""
    rendered = desired_objects(snap.app.name, snap.spec, snap.rendered, cluster, {})
    deployments = [o["metadata"]["name"] for o in rendered if o["kind"] == "Deployment"]
    services = [o for o in rendered if o["kind"] == "Service" and o["spec"].get("selector")]
    return [(s, deployments[0]) for s in services] if deployments else []


async def _current_hash(client: AsyncClient, namespace: str, deployment: str) -> str:
    """The pod-template-hash of the Deployment's current ReplicaSet: its running pods."""
    current = (await client.get(Deployment, deployment, namespace=namespace)).to_dict()
    revision = (current["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION)
    async for item in client.list(ReplicaSet, namespace=namespace):
        meta = item.to_dict()["metadata"]
        owners = [o["name"] for o in meta.get("ownerReferences", []) if o["kind"] == "Deployment"]
        ours = owners == [deployment]
        if ours and (meta.get("annotations") or {}).get(REVISION_ANNOTATION) == revision:
            return str(meta["labels"][POD_HASH])
    raise LookupError(f"Deployment {deployment} has no current ReplicaSet yet")


def release_objects(
    key: Key, snap: Snapshot, cluster: str, role: str, replicas: int | None, weight: int
) -> list[dict[str, Any]]:
    """The canary (or blue-green preview) beside each stable Deployment, of the release's
    revision; a preview gets its own Service, and a canary with an nginx router a Service and
    an Ingress carrying ingress-nginx's canary annotations."""
    labels = {**app_labels(key[0], snap.spec), RELEASE_ROLE: role}
    rendered = desired_objects(key[1], snap.spec, snap.rendered, cluster, labels)
    out: list[dict[str, Any]] = []
    services = [o for o in rendered if o["kind"] == "Service"]
    for stable in (o for o in rendered if o["kind"] == "Deployment"):
        obj = copy.deepcopy(stable)
        obj["metadata"]["name"] = f"{stable['metadata']['name']}-{role}"
        obj["metadata"]["namespace"] = snap.namespace
        spec = obj["spec"]
        count = (
            replicas if replicas is not None else canary_replicas(weight, spec.get("replicas", 1))
        )
        spec["replicas"] = count
        spec["selector"]["matchLabels"] = {**spec["selector"].get("matchLabels", {}), TRACK: role}
        template_labels = spec["template"]["metadata"].setdefault("labels", {})
        template_labels[TRACK] = role
        out.append(obj)
    routing = snap.spec.strategy.canary.trafficRouting if snap.spec.strategy.canary else None
    routed = routing is not None and routing.chosen() is not None and role == CANARY
    nginx = routing.nginx if routing is not None and role == CANARY else None
    if services and (routed or role == PREVIEW):
        service = copy.deepcopy(services[0])
        service_name = f"{service['metadata']['name']}-{role}"
        service["metadata"]["name"] = service_name
        service["metadata"]["namespace"] = snap.namespace
        service["spec"]["selector"] = {**service["spec"].get("selector", {}), TRACK: role}
        out.append(service)
    # Only a host the application routes (and so holds): a spec stored before the apply-time
    # check may name another tenant's.
    if services and nginx is not None and nginx.host in {r.host for r in snap.spec.routes}:
        annotations = {f"{NGINX}/canary": "true", f"{NGINX}/canary-weight": str(weight)}
        if nginx.header is not None:
            annotations[f"{NGINX}/canary-by-header"] = nginx.header.name
            annotations[f"{NGINX}/canary-by-header-value"] = nginx.header.value
        if nginx.cookie is not None:
            annotations[f"{NGINX}/canary-by-cookie"] = nginx.cookie.name
        port = service["spec"]["ports"][0]["port"]
        backend = {"service": {"name": service_name, "port": {"number": port}}}
        out.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {
                    "name": f"{key[1]}-{CANARY}",
                    "namespace": snap.namespace,
                    "labels": labels | {APP_LABEL: key[1]},
                    "annotations": annotations,
                },
                "spec": {
                    "ingressClassName": "nginx",
                    "rules": [
                        {
                            "host": nginx.host,
                            "http": {
                                "paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]
                            },
                        }
                    ],
                },
            }
        )
    return out


def _released(app: StoredResource) -> bool:
    """Whether the application has a strategy other than rolling (a row today's rules refuse
    is left to delivery, which reports it)."""
    try:
        return APPLICATION.typed(app).strategy.type != "rolling"
    except OutdatedSpecError:
        return False


def _startable(release: Release, wave: int) -> list[str]:
    """The wave's clusters to advance now: those under way, and as many waiting ones as
    the wave's maxParallel leaves room for (settled clusters free their place)."""
    members = release.state["waves"][wave]
    limits = release.state.get("maxParallel") or []
    limit = limits[wave] if wave < len(limits) and limits[wave] else len(members)
    phases = {c: release.clusters[c]["phase"] for c in members}
    busy = [c for c in members if phases[c] not in ("Pending", *SETTLED)]
    room = max(0, limit - len(busy))
    pending = [c for c in members if phases[c] == "Pending"][:room]
    return [c for c in members if c in busy or c in pending]


def announce(release: Release, event: ReleaseEvent, **detail: Any) -> None:
    """An event for the project's webhooks, queued with the release's next save."""
    release.events.append(event_body(release, event, **detail))


def _enter(st: dict[str, Any], step: int, phase: str, steps: Sequence[CanaryStep] = ()) -> None:
    at = now().isoformat()
    st.update(phase=phase, step=step, stepStartedAt=at, message="")
    st.setdefault("stepsStartedAt", {})[str(step)] = at  # the timeline keeps every step's start
    st.pop("applying", None)
    if step < len(steps) and _sets_canary(steps[step]):
        # Its apply is recorded with its entry: one write of the release row, not two in a
        # row on the step's path (a step is still recorded before its objects are applied).
        _record_applying(st, step, steps[step])


def _sets_canary(step: CanaryStep) -> bool:
    return step.setWeight is not None or step.setReplicas is not None


def _record_applying(st: dict[str, Any], index: int, step: CanaryStep) -> None:
    """Note that the step's canary is being applied, and the weight it gives (delivery
    writes a route's split from it)."""
    st["applying"] = index
    st["weight"] = step.setWeight if step.setWeight is not None else st.get("weight", 0)


def _parse(text: str) -> dt.datetime:
    at = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def _since(text: str) -> float:
    return (now() - _parse(text)).total_seconds()


def _conditions(release: Release) -> list[dict[str, Any]]:
    waiting = [n for n, c in release.clusters.items() if c.get("phase") in WAITING]
    conditions: list[dict[str, Any]] = list(release.state.get("conditions", []))
    paused = release.paused or bool(waiting)
    why = (
        "paused by a person" if release.paused else f"waiting for a promote in {', '.join(waiting)}"
    )
    conditions = set_condition(
        conditions,
        "Paused",
        "True" if paused else "False",
        "Paused" if paused else "Running",
        why if paused else "",
        release.revision,
    )
    active = not release.done and not paused
    conditions = set_condition(
        conditions,
        "Progressing",
        "True" if active else "False",
        release.phase,
        str(release.state.get("message", "")),
        release.revision,
    )
    return set_condition(
        conditions,
        "Completed",
        "True" if release.phase == "Succeeded" else "False",
        release.phase,
        json.dumps(release.state.get("wave", 0)),
        release.revision,
    )


class WebhookSender:
    """Sends the outbox's due release events to their webhooks: the JSON body signed with
    HMAC-SHA256, to the address the URL was checked at (no second resolution), no redirect
    followed. An event not answered 2xx stays in the outbox and is tried again after a
    back-off that doubles (up to 5 minutes); a restart finds it there."""

    def __init__(
        self,
        service: ResourceService,
        rules: ReleaseWebhookRules,
        policy: OutboundPolicy,
        every: float = 1.0,
    ) -> None:
        self.service = service
        self.rules = rules
        self.policy = policy
        self.every = every
        self.http = httpx.AsyncClient(timeout=5, follow_redirects=False)

    async def run(self) -> None:
        while True:
            try:
                sent = await self.send_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("sending release events failed", error=str(exc)[:300])
                sent = 0
            if not sent:
                await asyncio.sleep(self.every)

    async def send_due(self) -> int:
        due = await asyncio.to_thread(self._due)
        for notification in due:
            error = await self._send(notification)
            await asyncio.to_thread(self._mark, notification, error)
        return len(due)

    def _due(self) -> list[Notification]:
        with self.service.db.reader() as session:
            return due_notifications(session)

    def _mark(self, notification: Notification, error: str | None) -> None:
        with self.service.db.session() as session:
            mark_sent(session, notification, error)
        if error is not None:
            log.info("release event not delivered", webhook=notification.webhook, error=error)

    def _webhook(self, notification: Notification) -> tuple[str, str] | None:
        with self.service.db.reader() as session:
            stored = ResourceStore(session).get(
                "ReleaseWebhook", notification.tenant, notification.webhook
            )
        if stored is None:
            return None
        return RELEASE_WEBHOOK.typed(stored).url, self.rules.opened_secret(stored)

    async def _send(self, notification: Notification) -> str | None:
        """None when delivered (or its webhook is gone), else why not."""
        hook = await asyncio.to_thread(self._webhook, notification)
        if hook is None:
            return None  # the webhook was deleted: nobody to tell
        url, secret = hook
        try:
            target = self.policy.target(url)  # checked again: a name may resolve elsewhere now
        except OutboundRefused as exc:
            return f"refused: {exc}"
        body = json.dumps(notification.body, sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "wharf-release-webhook",
            SIGNATURE_HEADER: sign(secret, body),
            EVENT_HEADER: notification.event,
            DELIVERY_HEADER: str(notification.id),
        }
        try:
            answer = await send_to(self.http, target, "POST", body, headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:300]
        if answer.is_success:
            return None
        return f"the webhook answered {answer.status_code}"

    async def stop(self) -> None:
        await self.http.aclose()


async def send_to(
    http: httpx.AsyncClient, target: Target, method: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    """A request to the address the URL was checked at (no second resolution), naming the
    URL's host in Host and as the TLS server name; redirects are not followed."""
    default_port = {"http": 80, "https": 443}[target.scheme]
    host = target.host if target.port == default_port else f"{target.host}:{target.port}"
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return await http.request(
        method,
        target.connect_url(),
        content=body,
        headers={**headers, "Host": host},
        extensions=extensions,
        follow_redirects=False,
    )
