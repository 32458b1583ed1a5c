"""Releases as stored: analysis templates (who writes them, what Prometheus says of their
queries), the release rows of the state machine, which revision each cluster runs, and the
operations people take on a release (promote, pause, resume, abort), each audited."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.orm import Session

from wharf.apps.model import APPLICATION, ApplicationSpec
from wharf.core.crypto import SecretBox, place
from wharf.core.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from wharf.core.net import OutboundPolicy, OutboundRefused
from wharf.core.resources import check_name
from wharf.identity.model import Principal
from wharf.registry.service import ProjectOwnedRules
from wharf.releases.model import (
    ANALYSIS_TEMPLATE,
    BUILTIN_ARGS,
    RELEASE_WEBHOOK,
    AnalysisTemplateSpec,
    ReleaseEvent,
    ReleaseWebhookSpec,
    build_query,
    web_url,
)
from wharf.resources.service import Change, KindRules, ResourceService
from wharf.store.audit import AuditEvent, record
from wharf.store.resources import ResourceStore, StoredResource
from wharf.store.tables import release_measurements, release_notifications, releases
from wharf.tenancy.model import PROJECT_LABEL

TERMINAL = ("Succeeded", "Failed", "Aborted", "Superseded")
# A cluster in these phases runs the release's revision in its stable workload.
ON_NEW_REVISION = ("Promoting", "Promoted")
# A cluster in these phases runs the canary beside the stable workload (traffic is shifted).
CANARY_LIVE = ("Progressing", "WaitingPromote", "Inconclusive")
RELEASE = "Release"  # a change only the release controller reacts to (see operate)
Operation = Literal["promote", "pause", "resume", "abort", "retry", "skip-analysis"]
RETRYABLE = ("Failed", "Aborted")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AnalysisTemplateRules(KindRules[AnalysisTemplateSpec]):
    """Tenant admins write a tenant's analysis templates; queries are checked by parsing them
    as Wharf will run them and, when a Prometheus is configured, by asking it."""

    kind = ANALYSIS_TEMPLATE

    def __init__(self, prometheus_url: str | None, policy: OutboundPolicy) -> None:
        self.prometheus_url = prometheus_url
        self.policy = policy

    def validate(self, change: Change[AnalysisTemplateSpec]) -> AnalysisTemplateSpec:
        check_name(change.name)
        spec = change.spec
        for name in spec.args:
            if name in BUILTIN_ARGS:
                raise InvalidError(
                    f"spec.args.{name}: Wharf sets {name} itself", field=f"spec.args.{name}"
                )
        sample = {"app": "app", "cluster": "cluster", "revision": "1", "namespace": "ns"}
        for i, metric in enumerate(spec.metrics):
            if (metric.query is None) == (metric.web is None):  # a rule JSON Schema cannot say
                raise InvalidError(
                    f"spec.metrics[{i}]: give either query (Prometheus) or web (HTTP JSON)",
                    field=f"spec.metrics[{i}]",
                )
            if metric.web is not None:
                self._check_url(web_url(metric, {**spec.args, **sample}), f"spec.metrics[{i}]")
                continue
            where = f"spec.metrics[{i}].query"
            query = build_query(metric, {**spec.args, **sample}, "ns", where)
            self._ask_prometheus(query, where)
        return change.spec

    def _check_url(self, url: str, where: str) -> None:
        """A web check's URL must be one the server may reach (see wharf.core.net)."""
        try:
            self.policy.target(url)
        except OutboundRefused as exc:
            raise InvalidError(f"{where}.web.url: {exc}", field=f"{where}.web.url") from None

    def _ask_prometheus(self, query: str, where: str) -> None:
        ask_prometheus(self.prometheus_url, query, where)


def ask_prometheus(prometheus_url: str | None, query: str, where: str) -> None:
    """Prometheus' own word on a query: one it refuses is a 422 at `where`; none configured,
    or unreachable now, says nothing (the parse has checked it)."""
    if not prometheus_url:
        return
    try:
        answer = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": query}, timeout=5)
    except httpx.HTTPError:
        return
    if answer.status_code == 400:
        error = answer.json().get("error", answer.text)
        raise InvalidError(f"{where}: Prometheus refuses it: {error}", field=where)


# -- release rows ------------------------------------------------------------------------


@dataclass
class Release:
    id: int
    tenant: str
    application: str
    revision: int
    stable_revision: int
    phase: str
    paused: bool
    version: int
    state: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    measurements: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # to queue with the next save

    @property
    def clusters(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = self.state.setdefault("clusters", {})
        return result

    @property
    def done(self) -> bool:
        return self.phase in TERMINAL


def _release(row: Any) -> Release:
    return Release(
        id=row.id,
        tenant=row.tenant,
        application=row.application,
        revision=row.revision,
        stable_revision=row.stable_revision,
        phase=row.phase,
        paused=bool(row.paused),
        version=row.version,
        state=dict(row.state),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def latest_release(session: Session, tenant: str, app: str, lock: bool = False) -> Release | None:
    query = (
        select(releases)
        .where(releases.c.tenant == tenant, releases.c.application == app)
        .order_by(releases.c.revision.desc())
        .limit(1)
    )
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = session.execute(query).first()
    return _release(row) if row is not None else None


def create_release(
    session: Session, tenant: str, app: str, revision: int, stable: int, state: dict[str, Any]
) -> Release:
    at = now()
    phase = "Succeeded" if stable == 0 else "Progressing"
    session.execute(
        insert(releases).values(
            tenant=tenant,
            application=app,
            revision=revision,
            stable_revision=stable,
            phase=phase,
            paused=False,
            state=state,
            created_at=at,
            updated_at=at,
        )
    )
    made = latest_release(session, tenant, app)
    assert made is not None
    if phase == "Progressing":
        queue_events(session, made, [event_body(made, "started", waves=state.get("waves", []))])
    return made


class StaleReleaseError(ConflictError):
    """The release changed since it was read (a person promoted or aborted it): read again."""


def save_release(session: Session, release: Release) -> None:
    """Store the release's phase and state if nobody changed it since it was read."""
    done = session.execute(
        update(releases)
        .where(releases.c.id == release.id, releases.c.version == release.version)
        .values(
            phase=release.phase,
            paused=release.paused,
            state=release.state,
            version=release.version + 1,
            updated_at=now(),
        )
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise StaleReleaseError(f"release of {release.application} changed; read it again")
    release.version += 1
    queue_events(session, release, release.events)


def drop_releases(session: Session, tenant: str, app: str) -> None:
    ids = select(releases.c.id).where(releases.c.tenant == tenant, releases.c.application == app)
    session.execute(delete(release_measurements).where(release_measurements.c.release_id.in_(ids)))
    session.execute(
        delete(releases).where(releases.c.tenant == tenant, releases.c.application == app)
    )


def add_measurement(
    session: Session,
    release: Release,
    cluster: str,
    step: int,
    template: str,
    metric: str,
    outcome: str,
    value: float | None,
    message: str,
) -> None:
    session.execute(
        insert(release_measurements).values(
            release_id=release.id,
            cluster=cluster,
            step=step,
            template=template,
            metric=metric,
            phase=outcome,
            value=None if value is None else repr(value),
            message=message[:500],
            at=now(),
        )
    )


def measurements(session: Session, release_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        select(release_measurements)
        .where(release_measurements.c.release_id == release_id)
        .order_by(release_measurements.c.id)
    )
    return [
        {
            "cluster": r.cluster,
            "step": r.step,
            "template": r.template,
            "metric": r.metric,
            "phase": r.phase,
            "value": None if r.value is None else float(r.value),
            "message": r.message,
            "time": _utc(r.at).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        for r in rows
    ]


def _utc(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Pins:
    """Which revision the stable workloads run: `default`, or by cluster (0: the spec's)."""

    default: int = 0
    clusters: dict[str, int] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)

    def revision(self, cluster: str) -> int:
        return self.clusters.get(cluster, self.default)

    def weight(self, cluster: str) -> int | None:
        return self.weights.get(cluster)


def stable_after(release: Release | None, revision: int) -> int:
    """The revision a new release starts from: the last one that completed."""
    if release is None:
        return revision - 1
    return release.revision if release.phase == "Succeeded" else release.stable_revision


def pinned(session: Session, tenant: str, app: str, spec: ApplicationSpec, revision: int) -> Pins:
    """The revisions delivery applies to the stable workloads while a release is under way:
    the stable one until a cluster is promoted, the new one after."""
    if spec.strategy.type == "rolling":
        return Pins()
    release = latest_release(session, tenant, app)
    if release is None or release.revision != revision:
        stable = stable_after(release, revision)
        return Pins(default=stable) if stable > 0 else Pins()
    if release.phase == "Succeeded":
        return Pins()
    return Pins(
        default=release.stable_revision,
        clusters={
            name: revision
            for name, cluster in release.clusters.items()
            if cluster.get("phase") in ON_NEW_REVISION
        },
        weights={}
        if release.done
        else {
            name: int(cluster["weight"])
            for name, cluster in release.clusters.items()
            if cluster.get("phase") in CANARY_LIVE and cluster.get("weight") is not None
        },
    )


# -- what people do with a release -------------------------------------------------------


def _application(resources: ResourceService, p: Principal, tenant: str, app: str) -> str:
    """The application's project; 404 unless the caller may read it."""
    obj = resources.get(p, "Application", tenant, app)
    project: str = obj["spec"]["project"]
    return project


def release_status(
    resources: ResourceService, p: Principal, tenant: str, app: str
) -> dict[str, Any]:
    _application(resources, p, tenant, app)
    with resources.db.reader() as session:
        release = latest_release(session, tenant, app)
        if release is None:
            raise NotFoundError(f"application {app} has no release yet", field="application")
        release.measurements = measurements(session, release.id)
    return present(release)


def present(release: Release) -> dict[str, Any]:
    state = release.state
    return {
        "application": release.application,
        "revision": release.revision,
        "stableRevision": release.stable_revision,
        "phase": release.phase,
        "paused": release.paused,
        "wave": state.get("wave", 0),
        "waves": state.get("waves", []),
        "clusters": state.get("clusters", {}),
        "message": state.get("message", ""),
        "conditions": state.get("conditions", []),
        "measurements": release.measurements,
    }


def operate(
    resources: ResourceService, p: Principal, tenant: str, app: str, operation: Operation
) -> dict[str, Any]:
    """Promote, pause, resume or abort the application's release; developers of its project
    may, readers may not (403), and other tenants do not see it (404). Audited either way."""
    project = _application(resources, p, tenant, app)
    allowed = p.can_deliver(tenant, project)
    with resources.db.session() as session:
        event = AuditEvent(
            p.user,
            p.source,
            f"release-{operation}",
            "Application",
            tenant,
            app,
            "allowed" if allowed else "denied",
            project=project,
        )
        if not allowed:
            record(session, event)
    if not allowed:
        raise ForbiddenError(f"{p.user} may not {operation} releases in project {project}")
    with resources.db.session() as session:
        release = latest_release(session, tenant, app, lock=True)
        before = delivery_view(release)
        if operation == "retry":
            _retry(release, app)
        elif release is None or release.done:
            raise ConflictError(
                f"application {app} has no release under way to {operation}",
                field="application",
            )
        elif operation == "skip-analysis":
            _skip_analysis(release, analysis_steps(resources, p, tenant, app), app)
        else:
            _apply_operation(release, operation)
        assert release is not None
        save_release(session, release)
        record(session, event)
        release.measurements = measurements(session, release.id)
    # Delivery (every object of the application in every cluster) only when the operation
    # changed what it renders: a promote of 20 releases at once delivered 20 applications
    # everywhere for nothing, while their next steps waited for the CPU.
    changed = delivery_view(release) != before
    resources.notify("Application" if changed else RELEASE, tenant, app)
    return present(release)


def delivery_view(release: Release | None) -> Any:
    """What delivery renders from a release (see `pinned`): the revisions and, while it is
    under way, each cluster's new-revision pin and canary weight."""
    if release is None:
        return None
    clusters = {
        name: (
            cluster.get("phase") in ON_NEW_REVISION,
            cluster.get("weight") if cluster.get("phase") in CANARY_LIVE else None,
        )
        for name, cluster in release.clusters.items()
    }
    return release.revision, release.stable_revision, release.phase, release.done, clusters


def analysis_steps(resources: ResourceService, p: Principal, tenant: str, app: str) -> set[int]:
    """Indexes of the application's canary steps that are analyses."""
    _, spec = resources.read(p, APPLICATION, tenant, app)
    steps = spec.strategy.canary.steps if spec.strategy.canary else []
    return {i for i, step in enumerate(steps) if step.analysis is not None}


def _retry(release: Release | None, app: str) -> None:
    """A failed or aborted release runs again from its first step in every cluster (its
    earlier measurements stay as history; the new run measures afresh)."""
    if release is None or release.phase not in RETRYABLE:
        raise ConflictError(
            f"application {app} has no failed or aborted release to retry", field="application"
        )
    release.phase = "Progressing"
    release.paused = False
    release.state.update(wave=0, waveDoneAt=None, message="retried by a person")
    retries = int(release.state.get("retries", 0)) + 1
    release.state["retries"] = retries
    for name in release.clusters:
        release.clusters[name] = {"phase": "Pending", "step": 0}
    release.events.append(event_body(release, "started", retry=retries))


def _skip_analysis(release: Release, analyses: set[int], app: str) -> None:
    """Clusters at an analysis step (running or inconclusive) go past it, unjudged; the
    cluster's state keeps which steps a person skipped."""
    skipped = False
    for cluster in release.clusters.values():
        step = int(cluster.get("step", 0))
        if cluster.get("phase") in ("Progressing", "Inconclusive") and step in analyses:
            at = now().isoformat()
            cluster.update(phase="Progressing", step=step + 1, stepStartedAt=at, message="")
            cluster.setdefault("stepsStartedAt", {})[str(step + 1)] = at
            cluster["skippedAnalysis"] = [*cluster.get("skippedAnalysis", []), step]
            skipped = True
    if not skipped:
        raise ConflictError(
            f"no cluster of the release of {app} is at an analysis step", field="application"
        )


def _apply_operation(release: Release, operation: Operation) -> None:
    if operation == "pause":
        release.paused = True
    elif operation == "resume":
        release.paused = False
    elif operation == "abort":
        release.phase = "Aborted"
        release.state["message"] = "aborted by a person"
        release.events.append(event_body(release, "rolledBack", message="aborted by a person"))
        for cluster in release.clusters.values():
            if cluster.get("phase") != "Pending":
                cluster["phase"] = "RolledBack"
    else:  # promote: what waits for a person goes on past its step
        release.paused = False
        for cluster in release.clusters.values():
            if cluster.get("phase") in ("Inconclusive", "WaitingPromote"):
                cluster["phase"] = "Progressing"
                step, at = int(cluster.get("step", 0)) + 1, now().isoformat()
                cluster["step"] = step
                cluster["stepStartedAt"] = at
                cluster.setdefault("stepsStartedAt", {})[str(step)] = at


# -- release webhooks and their outbox -------------------------------------------------------

SIGNATURE_HEADER = "X-Wharf-Signature-256"
EVENT_HEADER = "X-Wharf-Event"
DELIVERY_HEADER = "X-Wharf-Delivery"  # the event's id: the same on a retry
MAX_BACKOFF = 300.0  # seconds: retries of an undelivered event slow down to this


class ReleaseWebhookRules(ProjectOwnedRules[ReleaseWebhookSpec]):
    """A project's admins (and tenant and platform admins) manage its release webhooks; its
    members read them (never the secret). The URL must be one the server may reach (see
    wharf.core.net) and the secret is sealed, bound to the webhook."""

    kind = RELEASE_WEBHOOK
    what = "release webhooks"

    def __init__(self, box: SecretBox, policy: OutboundPolicy) -> None:
        self.box = box
        self.policy = policy

    def check(self, change: Change[ReleaseWebhookSpec]) -> None:
        try:
            self.policy.target(change.spec.url)
        except OutboundRefused as exc:
            raise InvalidError(f"spec.url: {exc}", field="spec.url") from None

    def validate(self, change: Change[ReleaseWebhookSpec]) -> ReleaseWebhookSpec:
        spec = super().validate(change)
        old = change.old_spec.secret if change.old_spec is not None else None
        if spec.secret == old:
            return spec  # unchanged: sent back as it was read (masked)
        where = _webhook_place(change.tenant, change.name)
        if self.box.is_sealed(spec.secret):
            raise InvalidError(
                "spec.secret: send the secret itself, not a sealed value", field="spec.secret"
            )
        return spec.model_copy(update={"secret": self.box.seal(spec.secret, where)})

    def opened_secret(self, stored: StoredResource) -> str:
        return self.box.open_stored(
            RELEASE_WEBHOOK.typed(stored).secret, _webhook_place(stored.tenant, stored.name)
        )

    def reseal(self, stored: StoredResource) -> dict[str, Any] | None:
        """The spec with its secret sealed under the current key; None when it is."""
        spec = RELEASE_WEBHOOK.typed(stored)
        if not self.box.needs_reseal(spec.secret):
            return None
        where = _webhook_place(stored.tenant, stored.name)
        return {
            **stored.spec,
            "secret": self.box.seal(self.box.open_stored(spec.secret, where), where),
        }


def _webhook_place(tenant: str, name: str) -> str:
    return place(RELEASE_WEBHOOK.name, tenant, name, "spec.secret")


def event_body(release: Release, event: ReleaseEvent, **detail: Any) -> dict[str, Any]:
    """What a webhook receives: the event, the release it is about, and where it happened."""
    return {
        "event": event,
        "tenant": release.tenant,
        "application": release.application,
        "revision": release.revision,
        "stableRevision": release.stable_revision,
        "phase": release.phase,
        "time": now().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        **detail,
    }


def queue_events(session: Session, release: Release, bodies: list[dict[str, Any]]) -> int:
    """Accept events for every webhook of the application's project that wants them, in the
    caller's transaction (so an event is kept exactly when the step it reports is)."""
    if not bodies:
        return 0
    store = ResourceStore(session)
    # The tenant's webhooks first (an index seek): most have none, and then the application
    # need not be read at every step of every release.
    hooks = store.query(RELEASE_WEBHOOK.name, scopes=[(release.tenant, None)])
    if not hooks:
        return 0
    app = store.get("Application", release.tenant, release.application)
    if app is None:
        return 0
    project = app.labels.get(PROJECT_LABEL, "")
    hooks = [h for h in hooks if h.labels.get(PROJECT_LABEL) == project]
    at, count = now(), 0
    for hook in hooks:
        wanted = RELEASE_WEBHOOK.typed(hook).events
        for body in bodies:
            if body["event"] not in wanted:
                continue
            values = {"tenant": hook.tenant, "webhook": hook.name, "event": body["event"]}
            session.execute(
                insert(release_notifications).values(
                    **values, body={**body, "project": project}, next_at=at, created_at=at
                )
            )
            count += 1
    return count


@dataclass(frozen=True)
class Notification:
    id: int
    tenant: str
    webhook: str
    event: str
    body: dict[str, Any]
    attempts: int


def due_notifications(
    session: Session, limit: int = 50, table: Table = release_notifications
) -> list[Notification]:
    """The outbox's events due now (`table`: release events, or incidents' news)."""
    rows = session.execute(
        select(table)
        .where(table.c.delivered_at.is_(None), table.c.next_at <= now())
        .order_by(table.c.id)
        .limit(limit)
    )
    return [
        Notification(r.id, r.tenant, r.webhook, r.event, dict(r.body), r.attempts) for r in rows
    ]


def mark_sent(
    session: Session,
    notification: Notification,
    error: str | None,
    table: Table = release_notifications,
) -> None:
    """Delivered; or not (`error`), to be tried again after a back-off that doubles."""
    attempts = notification.attempts + 1
    if error is None:
        values: dict[str, Any] = {"delivered_at": now(), "attempts": attempts, "last_error": ""}
    else:
        delay = min(MAX_BACKOFF, 2.0 ** min(attempts, 16) / 2)
        values = {
            "attempts": attempts,
            "next_at": now() + dt.timedelta(seconds=delay),
            "last_error": error[:500],
        }
    session.execute(update(table).where(table.c.id == notification.id).values(**values))


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: sha256=<hex HMAC-SHA256 of the exact body bytes>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
