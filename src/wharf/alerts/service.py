"""Alert rules and channels as stored (who writes them, what Prometheus and promtool say of a
rule), incidents from Alertmanager's notifications, people's work on them, and silences.

Who may do what: a project's members read its rules, channels, incidents and silences; its
developers and admins (project `write`) write rules and channels, acknowledge, resolve,
assign and annotate incidents, and create and expire silences; other tenants see none of it
(404). Alertmanager reaches the receiver with the bearer token Wharf generated, and an alert
counts only when the rule its labels name exists in the tenant and project they name.
"""

from __future__ import annotations

import datetime as dt
import hmac
import shutil
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from wharf.alerts.model import (
    ALERT_RULE,
    EMAIL,
    NOTIFICATION_CHANNEL,
    RULE_LABEL,
    AlertRuleSpec,
    IncidentState,
    NotificationChannelSpec,
    rule_expr,
    rule_file,
)
from wharf.core.crypto import SecretBox, place
from wharf.core.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from wharf.core.net import OutboundPolicy, OutboundRefused
from wharf.core.resources import NAME_RE, check_name
from wharf.identity.model import Principal
from wharf.registry.service import ProjectOwnedRules
from wharf.releases.service import ask_prometheus
from wharf.resources.service import Change, ResourceService
from wharf.store.audit import AuditEvent, record
from wharf.store.resources import ResourceStore, StoredResource
from wharf.store.tables import incident_events, incident_notifications, incidents
from wharf.tenancy.model import PROJECT_LABEL

PROMTOOL = "/usr/bin/promtool"
MAX_SILENCE = dt.timedelta(days=30)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- alert rules -----------------------------------------------------------------------------


def may_act(p: Principal, tenant: str, project: str) -> bool:
    """Alerts are a developer's work (as delivery is): the project's developers and admins."""
    return p.can_deliver(tenant, project)


class AlertRuleRules(ProjectOwnedRules[AlertRuleSpec]):
    """A rule's expression is confined to its project, its rendered file must pass
    `promtool check rules`, and Prometheus must accept the query, before it is saved."""

    kind = ALERT_RULE
    what = "alert rules"

    def __init__(self, prometheus_url: str | None) -> None:
        self.prometheus_url = prometheus_url

    def may_write(self, p: Principal, tenant: str, project: str) -> bool:
        return may_act(p, tenant, project)

    def check(self, change: Change[AlertRuleSpec]) -> None:
        spec = change.spec
        if spec.params.app is not None:
            check_name(spec.params.app, "spec.params.app")
        where = "spec.expr" if spec.expr is not None else "spec.template"
        expr = rule_expr(spec, change.tenant, where)
        ask_prometheus(self.prometheus_url, expr, where)
        check_rule_file(rule_file(spec, change.tenant, change.name), where)


def check_rule_file(text: str, where: str) -> None:
    """promtool's word on the rendered rule file (a 422 at `where` when it refuses it)."""
    binary = shutil.which("promtool") or PROMTOOL
    if not Path(binary).exists():
        return  # no promtool here: Prometheus' own query check still runs
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as handle:
        handle.write(text)
        handle.flush()
        done = subprocess.run(
            [binary, "check", "rules", handle.name], capture_output=True, text=True, timeout=30
        )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        why = next((line for line in lines if "FAILED" not in line), "refused")
        why = why.replace(f"{handle.name}: ", "").strip()  # the temporary file means nothing
        raise InvalidError(f"{where}: promtool refuses the rule: {why}", field=where)


# -- notification channels -------------------------------------------------------------------


class NotificationChannelRules(ProjectOwnedRules[NotificationChannelSpec]):
    """A webhook channel's URL must be one the server may reach (wharf.core.net) and its
    secret is sealed, bound to the channel; an email channel names addresses."""

    kind = NOTIFICATION_CHANNEL
    what = "notification channels"

    def __init__(self, box: SecretBox, policy: OutboundPolicy) -> None:
        self.box = box
        self.policy = policy

    def may_write(self, p: Principal, tenant: str, project: str) -> bool:
        return may_act(p, tenant, project)

    def check(self, change: Change[NotificationChannelSpec]) -> None:
        spec = change.spec
        if spec.type == "webhook":
            if not spec.url:
                raise InvalidError("spec.url: a webhook channel needs a URL", field="spec.url")
            if not spec.secret:
                raise InvalidError(
                    "spec.secret: a webhook channel signs with a secret", field="spec.secret"
                )
            try:
                self.policy.target(spec.url)
            except OutboundRefused as exc:
                raise InvalidError(f"spec.url: {exc}", field="spec.url") from None
            return
        if not spec.to:
            raise InvalidError("spec.to: an email channel needs an address", field="spec.to")
        for i, address in enumerate(spec.to):
            if not EMAIL.fullmatch(address):
                where = f"spec.to[{i}]"
                raise InvalidError(f"{where}: {address!r} is not an address", field=where)

    def validate(self, change: Change[NotificationChannelSpec]) -> NotificationChannelSpec:
        spec = super().validate(change)
        old = change.old_spec.secret if change.old_spec is not None else None
        if spec.secret is None or spec.secret == old:
            return spec
        if self.box.is_sealed(spec.secret):
            raise InvalidError(
                "spec.secret: send the secret itself, not a sealed value", field="spec.secret"
            )
        where = _channel_place(change.tenant, change.name)
        return spec.model_copy(update={"secret": self.box.seal(spec.secret, where)})

    def opened_secret(self, stored: StoredResource) -> str:
        secret = NOTIFICATION_CHANNEL.typed(stored).secret or ""
        return self.box.open_stored(secret, _channel_place(stored.tenant, stored.name))

    def reseal(self, stored: StoredResource) -> dict[str, Any] | None:
        spec = NOTIFICATION_CHANNEL.typed(stored)
        if spec.secret is None or not self.box.needs_reseal(spec.secret):
            return None
        where = _channel_place(stored.tenant, stored.name)
        opened = self.box.open_stored(spec.secret, where)
        return {**stored.spec, "secret": self.box.seal(opened, where)}


def _channel_place(tenant: str, name: str) -> str:
    return place(NOTIFICATION_CHANNEL.name, tenant, name, "spec.secret")


# -- the receiver: Alertmanager's notifications become incidents ----------------------------


def receiver_allows(token: str, authorization: str | None) -> bool:
    """The request carries Wharf's receiver token (compared in constant time)."""
    scheme, _, sent = (authorization or "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(sent.strip(), token)


@dataclass(frozen=True)
class Alert:
    """One alert of a notification, as far as Wharf trusts it."""

    tenant: str
    project: str
    rule: str
    application: str
    cluster: str
    firing: bool
    labels: dict[str, str]
    summary: str


def alerts_of(payload: dict[str, Any]) -> list[Alert]:
    out = []
    for item in payload.get("alerts") or []:
        if not isinstance(item, dict):
            continue
        labels = {str(k): str(v) for k, v in (item.get("labels") or {}).items()}
        notes = item.get("annotations") or {}
        out.append(
            Alert(
                tenant=labels.get("tenant", ""),
                project=labels.get("project", ""),
                rule=labels.get(RULE_LABEL, ""),
                application=labels.get("app", ""),
                cluster=labels.get("cluster", ""),
                firing=item.get("status") == "firing",
                labels=labels,
                summary=str(notes.get("summary", ""))[:500] if isinstance(notes, dict) else "",
            )
        )
    return out


def receive(service: ResourceService, payload: dict[str, Any]) -> dict[str, int]:
    """Open, update or resolve the incidents a notification speaks of; alerts that name a
    rule their tenant and project do not own are ignored (counted)."""
    counts = {"opened": 0, "resolved": 0, "ignored": 0}
    with service.db.session() as session:
        for alert in alerts_of(payload):
            spec = _owning_rule(session, alert)
            if spec is None:
                counts["ignored"] += 1
                continue
            if alert.firing and _open(session, alert, spec):
                counts["opened"] += 1
            elif not alert.firing and _resolve_group(session, alert):
                counts["resolved"] += 1
    return counts


def _owning_rule(session: Session, alert: Alert) -> AlertRuleSpec | None:
    if not (alert.tenant and alert.project and alert.rule):
        return None
    stored = ResourceStore(session).get(ALERT_RULE.name, alert.tenant, alert.rule)
    if stored is None:
        return None
    spec = ALERT_RULE.typed(stored)
    return spec if spec.project == alert.project else None


def _group(alert: Alert) -> Any:
    c = incidents.c
    return (
        (c.tenant == alert.tenant)
        & (c.rule == alert.rule)
        & (c.application == alert.application)
        & (c.cluster == alert.cluster)
        & (c.state != "resolved")
    )


def _open(session: Session, alert: Alert, spec: AlertRuleSpec) -> bool:
    """A new incident for the alert's group, unless one is open (True when opened)."""
    if session.execute(select(incidents.c.id).where(_group(alert))).first() is not None:
        return False
    at = now()
    values = {
        "tenant": alert.tenant,
        "project": alert.project,
        "rule": alert.rule,
        "application": alert.application,
        "cluster": alert.cluster,
        "state": "open",
        "severity": spec.severity,
        "summary": alert.summary or spec.summary,
        "labels": alert.labels,
        "opened_at": at,
        "updated_at": at,
    }
    returned = session.execute(insert(incidents).values(**values).returning(incidents.c.id))
    incident_id = int(returned.scalar_one())
    _event(session, incident_id, "alertmanager", "opened", alert.summary)
    _tell_channels(session, incident_id, "incidentOpened")
    return True


def _resolve_group(session: Session, alert: Alert) -> bool:
    row = session.execute(select(incidents).where(_group(alert))).first()
    if row is None:
        return False
    _set_state(session, row.id, "resolved", "alertmanager", "the alert stopped firing")
    _tell_channels(session, row.id, "incidentResolved")
    return True


def _event(session: Session, incident_id: int, actor: str, action: str, text: str = "") -> None:
    values = {"incident_id": incident_id, "at": now(), "actor": actor, "action": action}
    session.execute(insert(incident_events).values(**values, text=text[:2000]))


def _set_state(
    session: Session, incident_id: int, state: IncidentState, actor: str, text: str = ""
) -> None:
    values: dict[str, Any] = {"state": state, "updated_at": now()}
    if state == "resolved":
        values["resolved_at"] = values["updated_at"]
    session.execute(update(incidents).where(incidents.c.id == incident_id).values(**values))
    _event(session, incident_id, actor, state, text)


# -- incidents as people see them ------------------------------------------------------------


def present_incident(row: Any, events: list[Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "id": row.id,
        "tenant": row.tenant,
        "project": row.project,
        "rule": row.rule,
        "application": row.application,
        "cluster": row.cluster,
        "state": row.state,
        "severity": row.severity,
        "summary": row.summary,
        "assignee": row.assignee,
        "labels": dict(row.labels),
        "openedAt": _time(row.opened_at),
        "resolvedAt": _time(row.resolved_at) if row.resolved_at else None,
        "links": links(row.tenant, row.project, row.application, row.cluster),
    }
    if events is not None:
        answer["timeline"] = [
            {"at": _time(e.at), "actor": e.actor, "action": e.action, "text": e.text}
            for e in events
        ]
    return answer


def _time(at: dt.datetime) -> str:
    at = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
    return at.isoformat(timespec="seconds").replace("+00:00", "Z")


def links(tenant: str, project: str, app: str, cluster: str) -> dict[str, str]:
    """The console's pages for the application: its live logs, and its project's charts of
    it (the charts page's ranges reach back 7 days)."""
    if not app or not NAME_RE.fullmatch(app):
        return {}  # not an application's name: nothing of it to link to
    charts = urllib.parse.urlencode({"app": app, **({"cluster": cluster} if cluster else {})})
    # The labels come from the alert (a rule's PromQL may set them): quoted, a name cannot
    # turn the link into another page's path.
    path = "/".join(urllib.parse.quote(part, safe="") for part in (tenant, "applications", app))
    return {
        "logs": f"/console/tenants/{path}/logs",
        "charts": f"/console/tenants/{urllib.parse.quote(tenant, safe='')}/projects/"
        f"{urllib.parse.quote(project, safe='')}/metrics?{charts}",
    }


INCIDENT_PAGE = 500  # at most this many incidents a page


@dataclass(frozen=True)
class IncidentPage:
    """One page of incidents, newest first, and the token of the next page (None: the last)."""

    items: list[dict[str, Any]]
    next: str | None


def list_incidents(
    service: ResourceService,
    p: Principal,
    tenant: str,
    project: str | None = None,
    state: str | None = None,
    limit: int = INCIDENT_PAGE,
    continue_: str | None = None,
) -> IncidentPage:
    """The incidents of the tenant's projects the caller reads, newest first, a page at a
    time: `continue_` is the token the previous page gave (the last number it showed)."""
    if not p.sees_tenant(tenant):
        raise NotFoundError(f"tenant {tenant} not found", field="tenant")
    limit = max(1, min(limit, INCIDENT_PAGE))
    query = select(incidents).where(incidents.c.tenant == tenant)
    readable = p.visible_projects(tenant)
    if readable is not None:  # only some projects: chosen in the query, so pages stay full
        query = query.where(incidents.c.project.in_(sorted(readable)))
    if project:
        query = query.where(incidents.c.project == project)
    if state:
        query = query.where(incidents.c.state == state)
    if continue_:
        query = query.where(incidents.c.id < _after(continue_))
    with service.db.reader() as session:
        rows = list(session.execute(query.order_by(incidents.c.id.desc()).limit(limit + 1)))
    shown = [r for r in rows[:limit] if p.can("read", tenant, r.project)]
    following = str(rows[limit - 1].id) if len(rows) > limit else None
    return IncidentPage([present_incident(r) for r in shown], following)


def _after(token: str) -> int:
    if not token.isdigit() or not 1 <= int(token) < 2**63:
        raise InvalidError("continue: not a token this list gave", field="continue")
    return int(token)


def _incident_row(session: Session, p: Principal, tenant: str, incident_id: int) -> Any:
    row = session.execute(
        select(incidents).where(incidents.c.tenant == tenant, incidents.c.id == incident_id)
    ).first()
    if row is None or not p.can("read", tenant, row.project):
        raise NotFoundError(f"incident {incident_id} not found in tenant {tenant}", field="id")
    return row


def get_incident(
    service: ResourceService, p: Principal, tenant: str, incident_id: int
) -> dict[str, Any]:
    with service.db.reader() as session:
        row = _incident_row(session, p, tenant, incident_id)
        return present_incident(row, _timeline(session, incident_id))


def _timeline(session: Session, incident_id: int) -> list[Any]:
    query = select(incident_events).where(incident_events.c.incident_id == incident_id)
    return list(session.execute(query.order_by(incident_events.c.id)))


def act_on_incident(
    service: ResourceService,
    p: Principal,
    tenant: str,
    incident_id: int,
    action: str,
    text: str = "",
    assignee: str = "",
) -> dict[str, Any]:
    """ack, resolve, note or assign: the project's developers may, its readers may not
    (403), other tenants do not see it (404). Audited either way."""
    with service.db.session() as session:
        row = _incident_row(session, p, tenant, incident_id)
        allowed = may_act(p, tenant, row.project)
        event = AuditEvent(
            p.user, p.source, f"incident-{action}", "Incident", tenant, str(incident_id),
            "allowed" if allowed else "denied", project=row.project,
        )  # fmt: skip
        if not allowed:
            record(session, event)
    if not allowed:
        raise ForbiddenError(f"{p.user} may not {action} incidents of project {row.project}")
    with service.db.session() as session:
        row = _incident_row(session, p, tenant, incident_id)
        _apply(session, row, p.user, action, text, assignee)
        record(session, event)
        return present_incident(row, _timeline(session, incident_id))


def _apply(session: Session, row: Any, actor: str, action: str, text: str, assignee: str) -> None:
    if action == "note":
        if not text.strip():
            raise InvalidError("text: a note says something", field="text")
        _event(session, row.id, actor, "note", text)
    elif action == "assign":
        check_name(assignee, "assignee")
        session.execute(update(incidents).where(incidents.c.id == row.id).values(assignee=assignee))
        _event(session, row.id, actor, "assigned", assignee)
    elif row.state == "resolved":
        raise ConflictError(f"incident {row.id} is resolved already", field="state")
    elif action == "ack":
        if row.state == "acknowledged":
            raise ConflictError(f"incident {row.id} is acknowledged already", field="state")
        _set_state(session, row.id, "acknowledged", actor, text)
    else:  # resolve
        _set_state(session, row.id, "resolved", actor, text)
        _tell_channels(session, row.id, "incidentResolved")


# -- channels: the outbox ---------------------------------------------------------------------


def _tell_channels(session: Session, incident_id: int, event: str) -> int:
    """Queue the incident's news for every channel of its project that wants its severity,
    in the caller's transaction (kept exactly when the change it reports is)."""
    row = session.execute(select(incidents).where(incidents.c.id == incident_id)).one()
    channels = [
        c
        for c in ResourceStore(session).query(
            NOTIFICATION_CHANNEL.name, selector={PROJECT_LABEL: row.project}
        )
        if c.tenant == row.tenant and row.severity in NOTIFICATION_CHANNEL.typed(c).severities
    ]
    body = {"event": event, **present_incident(row)}
    at = now()
    for channel in channels:
        values = {"tenant": row.tenant, "webhook": channel.name, "event": event}
        session.execute(
            insert(incident_notifications).values(**values, body=body, next_at=at, created_at=at)
        )
    return len(channels)


def email_text(body: dict[str, Any]) -> tuple[str, str]:
    """The subject and text of an incident's email."""
    what = "resolved" if body.get("event") == "incidentResolved" else "opened"
    subject = (
        f"[{body.get('severity', '')}] incident {body.get('id')} {what}: "
        f"{body.get('rule', '')} in {body.get('tenant', '')}/{body.get('project', '')}"
    )
    lines = [
        subject,
        "",
        f"Application: {body.get('application') or '-'}",
        f"Cluster: {body.get('cluster') or '-'}",
        f"Summary: {body.get('summary') or '-'}",
        *(f"{name}: {url}" for name, url in (body.get("links") or {}).items()),
    ]
    return subject, "\n".join(lines) + "\n"


# -- silences (held by Alertmanager) ---------------------------------------------------------


def _project_readable(service: ResourceService, p: Principal, tenant: str, project: str) -> None:
    service.get(p, "Project", tenant, project)  # 404 unless the caller reads it


def silence_matchers(tenant: str, project: str, rule: str | None) -> list[dict[str, Any]]:
    labels = {"tenant": tenant, "project": project, **({RULE_LABEL: rule} if rule else {})}
    return [
        {"name": name, "value": value, "isRegex": False, "isEqual": True}
        for name, value in labels.items()
    ]


def create_silence(
    service: ResourceService,
    p: Principal,
    alertmanager_url: str | None,
    tenant: str,
    body: dict[str, Any],
) -> dict[str, Any]:
    """A silence of a project's alerts (or one rule's) until `endsAt`, created in
    Alertmanager and audited; developers of the project may, readers may not."""
    project = str(body.get("project") or "")
    _project_readable(service, p, tenant, project)
    if not may_act(p, tenant, project):
        _audit(service, p, "silence-create", tenant, project, project, False)
        raise ForbiddenError(f"{p.user} may not silence alerts of project {project}")
    ends = _ends_at(body.get("endsAt"))
    rule = body.get("rule") or None
    if rule is not None:
        check_name(str(rule), "rule")
    if not alertmanager_url:
        raise ConflictError("no Alertmanager is configured (WHARF_ALERTMANAGER_URL)")
    silence = {
        "matchers": silence_matchers(tenant, project, rule),
        "startsAt": _time(now()),
        "endsAt": _time(ends),
        "createdBy": p.user,
        "comment": str(body.get("comment") or f"silenced by {p.user}")[:500],
    }
    answer = _alertmanager(alertmanager_url, "POST", "/api/v2/silences", json=silence)
    _audit(service, p, "silence-create", tenant, answer["silenceID"], project, True)
    return {"id": answer["silenceID"], "project": project, "rule": rule, "endsAt": _time(ends)}


def _ends_at(value: Any) -> dt.datetime:
    try:
        ends = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidError("endsAt: write an RFC 3339 time", field="endsAt") from None
    ends = ends if ends.tzinfo else ends.replace(tzinfo=dt.UTC)
    if ends <= now():
        raise InvalidError("endsAt: a silence ends in the future", field="endsAt")
    if ends - now() > MAX_SILENCE:
        raise InvalidError("endsAt: a silence lasts at most 30 days", field="endsAt")
    return ends


def list_silences(
    service: ResourceService, p: Principal, alertmanager_url: str | None, tenant: str
) -> list[dict[str, Any]]:
    """The tenant's active silences in the projects the caller reads."""
    if not p.sees_tenant(tenant):
        raise NotFoundError(f"tenant {tenant} not found", field="tenant")
    if not alertmanager_url:
        return []
    found = _alertmanager(
        alertmanager_url, "GET", "/api/v2/silences", params={"filter": f'tenant="{tenant}"'}
    )
    out = []
    for s in found:
        labels = {m["name"]: m["value"] for m in s.get("matchers", [])}
        if labels.get("tenant") != tenant or s.get("status", {}).get("state") == "expired":
            continue
        if p.can("read", tenant, labels.get("project", "")):
            out.append(
                {
                    "id": s["id"],
                    "project": labels.get("project"),
                    "rule": labels.get(RULE_LABEL),
                    "endsAt": s["endsAt"],
                    "createdBy": s.get("createdBy", ""),
                    "comment": s.get("comment", ""),
                }
            )
    return out


def expire_silence(
    service: ResourceService,
    p: Principal,
    alertmanager_url: str | None,
    tenant: str,
    silence_id: str,
) -> None:
    """End a silence now; only one of a project the caller writes (else 404 or 403)."""
    mine = {s["id"]: s for s in list_silences(service, p, alertmanager_url, tenant)}
    if silence_id not in mine:
        raise NotFoundError(f"silence {silence_id} not found in tenant {tenant}", field="id")
    project = str(mine[silence_id]["project"])
    allowed = may_act(p, tenant, project)
    _audit(service, p, "silence-expire", tenant, silence_id, project, allowed)
    if not allowed:
        raise ForbiddenError(f"{p.user} may not end silences of project {project}")
    assert alertmanager_url is not None
    _alertmanager(alertmanager_url, "DELETE", f"/api/v2/silence/{silence_id}")


def _audit(
    service: ResourceService,
    p: Principal,
    action: str,
    tenant: str,
    name: str,
    project: str,
    allowed: bool,
) -> None:
    outcome = "allowed" if allowed else "denied"
    event = AuditEvent(p.user, p.source, action, "Silence", tenant, name, outcome, project=project)
    with service.db.session() as session:
        record(session, event)


def _alertmanager(url: str, method: str, path: str, **kwargs: Any) -> Any:
    try:
        answer = httpx.request(method, f"{url}{path}", timeout=10, **kwargs)
    except httpx.HTTPError as exc:
        raise ConflictError(f"Alertmanager is unreachable: {exc}") from None
    if answer.status_code >= 400:
        raise ConflictError(f"Alertmanager refused it: {answer.text[:300]}")
    return answer.json() if answer.content else None
