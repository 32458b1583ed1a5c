"""Keeps Prometheus' rule files in step with the alert rules, and tells channels of incidents.

The rule controller writes one file per rule into the rules directory Prometheus reads
(`<dir>/*.yml`), only when its text differs, removes files whose rule is gone, and asks
Prometheus to reload (`POST /-/reload`) only after it changed something: an idle platform
writes nothing and reloads nothing. The channel sender delivers the incident outbox: webhooks
signed and sent through the outbound guard (as release webhooks are), email through SMTP.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
from collections.abc import Hashable, Iterable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from wharf.alerts.model import ALERT_RULE, NOTIFICATION_CHANNEL, file_name, rule_file
from wharf.alerts.service import NotificationChannelRules, email_text, may_act
from wharf.core.controller import Controller
from wharf.core.errors import ForbiddenError, OutdatedSpecError, WharfError
from wharf.core.logging import get_logger
from wharf.core.net import OutboundPolicy, OutboundRefused
from wharf.core.resources import set_condition
from wharf.identity.model import Principal
from wharf.releases.controller import send_to
from wharf.releases.service import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    Notification,
    due_notifications,
    mark_sent,
    sign,
)
from wharf.resources.service import ResourceService
from wharf.store.audit import AuditEvent, record
from wharf.store.resources import ResourceStore, StoredResource
from wharf.store.tables import incident_notifications

log = get_logger("wharf.alerts")
Key = tuple[str, str]


class RuleFileController:
    def __init__(
        self,
        service: ResourceService,
        rules_dir: Path | None,
        prometheus_url: str | None,
        resync: float = 30.0,
    ) -> None:
        self.service = service
        self.rules_dir = rules_dir
        self.prometheus_url = prometheus_url
        self.http = httpx.AsyncClient(timeout=10)
        self.writes = 0  # files written or removed (the no-op promise is tested by it)
        self.reloads = 0
        self.controller = Controller("alert-rules", self.reconcile, self.list_keys, resync=resync)

    async def list_keys(self) -> Iterable[Hashable]:
        def keys() -> list[Key]:
            with self.service.db.reader() as session:
                rules = ResourceStore(session).query(ALERT_RULE.name)
            held = {(r.tenant, r.name) for r in rules}
            return sorted(held | set(self._files()))

        return await asyncio.to_thread(keys)

    def _files(self) -> list[Key]:
        """The rules whose files are in the directory (tenant--name.yml)."""
        if self.rules_dir is None or not self.rules_dir.is_dir():
            return []
        found = [p.stem.split("--", 1) for p in self.rules_dir.glob("*--*.yml")]
        return [(f[0], f[1]) for f in found if len(f) == 2]

    async def reconcile(self, key: Key) -> None:
        changed = await asyncio.to_thread(self._render, key)
        reload_error = await self._reload() if changed else None
        await asyncio.to_thread(self._record, key, reload_error)

    def _render(self, key: Key) -> bool:
        """Write or remove the rule's file; True when the directory changed."""
        if self.rules_dir is None:
            return False
        tenant, name = key
        with self.service.db.reader() as session:
            stored = ResourceStore(session).get(ALERT_RULE.name, tenant, name)
        path = self.rules_dir / file_name(tenant, name)
        wanted = self._wanted(stored, tenant, name)
        if wanted is None:
            if not path.exists():
                return False
            path.unlink()
        else:
            if path.exists() and path.read_text() == wanted:
                return False
            self.rules_dir.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")  # Prometheus reads *.yml: never a torn file
            temporary.write_text(wanted)
            temporary.replace(path)
        self.writes += 1
        return True

    @staticmethod
    def _wanted(stored: StoredResource | None, tenant: str, name: str) -> str | None:
        if stored is None:
            return None
        try:
            return rule_file(ALERT_RULE.typed(stored), tenant, name)
        except (OutdatedSpecError, WharfError):
            return None  # no longer valid: evaluated nowhere, its status says why

    async def _reload(self) -> str | None:
        if not self.prometheus_url:
            return None
        try:
            answer = await self.http.post(f"{self.prometheus_url}/-/reload")
        except httpx.HTTPError as exc:
            return f"Prometheus is unreachable: {exc}"
        self.reloads += 1
        return None if answer.is_success else f"Prometheus refused the reload: {answer.text}"

    def _record(self, key: Key, reload_error: str | None) -> None:
        def build(stored: StoredResource) -> dict[str, Any]:
            status, reason, message = self._state(stored, reload_error)
            conditions = set_condition(
                stored.status.get("conditions", []),
                "Ready",
                status,
                reason,
                message,
                stored.generation,
            )
            return {
                **stored.status,
                "conditions": conditions,
                "observedGeneration": stored.generation,
            }

        self.service.write_status(ALERT_RULE.name, key[0], key[1], build)

    def _state(self, stored: StoredResource, reload_error: str | None) -> tuple[Any, str, str]:
        if self.rules_dir is None:
            return (
                "False",
                "NotEvaluated",
                "no rules directory is configured (WHARF_ALERT_RULES_DIR)",
            )
        if self._wanted(stored, stored.tenant, stored.name) is None:
            return (
                "False",
                "OutdatedSpec",
                "the rule no longer passes today's checks; apply it again",
            )
        if reload_error:
            return "False", "ReloadFailed", reload_error
        return "True", "Loaded", "rendered into Prometheus' rule files"

    async def stop(self) -> None:
        await self.http.aclose()


class ChannelSender:
    """Delivers the incident outbox: a webhook channel gets the JSON body signed with
    HMAC-SHA256 (to the address its URL was checked at, no redirect followed), an email
    channel a mail through the platform's SMTP server. Undelivered news is retried with
    back-off; the channel's status says when its last delivery failed."""

    def __init__(
        self,
        service: ResourceService,
        rules: NotificationChannelRules,
        policy: OutboundPolicy,
        smtp: tuple[str | None, int, str],
        every: float = 1.0,
    ) -> None:
        self.service = service
        self.rules = rules
        self.policy = policy
        self.smtp = smtp
        self.every = every
        self.http = httpx.AsyncClient(timeout=5, follow_redirects=False)

    async def run(self) -> None:
        while True:
            try:
                sent = await self.send_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("sending incident news failed", error=str(exc)[:300])
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
            return due_notifications(session, table=incident_notifications)

    def _mark(self, notification: Notification, error: str | None) -> None:
        with self.service.db.session() as session:
            mark_sent(session, notification, error, table=incident_notifications)
        record_delivery(self.service, notification.tenant, notification.webhook, error)

    def _channel(self, notification: Notification) -> StoredResource | None:
        with self.service.db.reader() as session:
            return ResourceStore(session).get(
                NOTIFICATION_CHANNEL.name, notification.tenant, notification.webhook
            )

    async def _send(self, notification: Notification) -> str | None:
        stored = await asyncio.to_thread(self._channel, notification)
        if stored is None:
            return None  # the channel was deleted: nobody to tell
        return await self.deliver(stored, notification.event, notification.body, notification.id)

    async def deliver(
        self, stored: StoredResource, event: str, body: dict[str, Any], delivery: int
    ) -> str | None:
        """Send one piece of news on a channel: None when delivered, else why not."""
        spec = NOTIFICATION_CHANNEL.typed(stored)
        if spec.type == "email":
            return await asyncio.to_thread(self._mail, spec.to, body)
        try:
            target = self.policy.target(spec.url or "")
        except OutboundRefused as exc:
            return f"refused: {exc}"
        data = json.dumps(body, sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "wharf-incident-webhook",
            SIGNATURE_HEADER: sign(self.rules.opened_secret(stored), data),
            EVENT_HEADER: event,
            DELIVERY_HEADER: str(delivery),
        }
        try:
            answer = await send_to(self.http, target, "POST", data, headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:300]
        return None if answer.is_success else f"the webhook answered {answer.status_code}"

    def _mail(self, to: list[str], body: dict[str, Any]) -> str | None:
        host, port, sender = self.smtp
        if not host:
            return "no SMTP server is configured (WHARF_SMTP_HOST)"
        subject, text = email_text(body)
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = sender, ", ".join(to), subject
        message.set_content(text)
        try:
            with smtplib.SMTP(host, port, timeout=10) as smtp:
                smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            return f"the SMTP server refused it: {exc}"[:300]
        return None

    async def stop(self) -> None:
        await self.http.aclose()


def record_delivery(service: ResourceService, tenant: str, name: str, error: str | None) -> None:
    """The channel's Delivered condition: its last delivery, and why it failed (no write when
    it says the same)."""

    def build(stored: StoredResource) -> dict[str, Any]:
        conditions = set_condition(
            stored.status.get("conditions", []),
            "Delivered",
            "False" if error else "True",
            "DeliveryFailed" if error else "Delivered",
            error or "",
            stored.generation,
        )
        return {**stored.status, "conditions": conditions}

    service.write_status(NOTIFICATION_CHANNEL.name, tenant, name, build)


class Alerting:
    """What the alerting routes share: the receiver's token, Alertmanager, the sender."""

    def __init__(self, token: str, alertmanager_url: str | None, sender: ChannelSender) -> None:
        self.token = token
        self.alertmanager_url = alertmanager_url
        self.sender = sender


async def test_channel(
    service: ResourceService, alerting: Alerting, p: Principal, tenant: str, name: str
) -> dict[str, Any]:
    """Send a test message on a channel now (the console's test button); its project's
    developers may, readers may not (403), other tenants do not see it (404). Audited."""
    obj = await asyncio.to_thread(service.get, p, NOTIFICATION_CHANNEL.name, tenant, name)
    project = str(obj["spec"]["project"])
    allowed = may_act(p, tenant, project)
    event = AuditEvent(
        p.user, p.source, "channel-test", NOTIFICATION_CHANNEL.name, tenant, name,
        "allowed" if allowed else "denied", project=project,
    )  # fmt: skip
    await asyncio.to_thread(_record, service, event)
    if not allowed:
        raise ForbiddenError(f"{p.user} may not test channels of project {project}")
    with service.db.reader() as session:
        stored = ResourceStore(session).get(NOTIFICATION_CHANNEL.name, tenant, name)
    assert stored is not None
    body = {
        "event": "test",
        "tenant": tenant,
        "project": project,
        "id": 0,
        "rule": "test",
        "severity": "info",
        "summary": f"a test message from Wharf, sent by {p.user}",
    }
    error = await alerting.sender.deliver(stored, "test", body, 0)
    await asyncio.to_thread(record_delivery, service, tenant, name, error)
    return {"delivered": error is None, "error": error or ""}


def _record(service: ResourceService, event: AuditEvent) -> None:
    with service.db.session() as session:
        record(session, event)
