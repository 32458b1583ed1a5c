"""Alert rules, incidents, notification channels and silences against a real Prometheus, a real
Alertmanager (Debian's packages) and a real SMTP server (aiosmtpd) on loopback.

Who may do what: a project's members read its rules, channels, incidents and silences; its
developers write rules and channels, act on incidents, test channels and silence alerts; its
viewers may not (403); another tenant sees none of it (404). Alertmanager's posts count only
with Wharf's bearer token, and only for rules their tenant and project own.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller as SmtpController
from sqlalchemy import select

from tests.integration.conftest import Api, Wharf, wait_for
from wharf.lab.alertmanager import Alertmanager
from wharf.lab.prometheus import Prometheus, free_port
from wharf.store.tables import audit_events

REFUSED_ADDRESS = "refuse@example.com"


@dataclass
class Mailbox:
    """What the SMTP server accepted; it answers 550 for REFUSED_ADDRESS."""

    messages: list[Any] = field(default_factory=list)

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address == REFUSED_ADDRESS:
            return "550 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content.decode())
        return "250 Message accepted for delivery"


@dataclass
class Stack:
    rules_dir: Path
    prometheus: Prometheus
    alertmanager: Alertmanager
    mailbox: Mailbox
    smtp_port: int


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("alerting")
    alertmanager = Alertmanager(
        base / "alertmanager", "http://127.0.0.1:9/nowhere", base / "receiver.token"
    )
    alertmanager.start()
    rules_dir = base / "rules"
    prometheus = Prometheus(
        base / "prometheus", [], "1s", rules_dir=rules_dir, alertmanager=alertmanager.address
    )
    prometheus.start()
    mailbox = Mailbox()
    smtp = SmtpController(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        yield Stack(rules_dir, prometheus, alertmanager, mailbox, smtp.port)
    finally:
        smtp.stop()
        prometheus.stop()
        alertmanager.stop()


@pytest.fixture
def wharf_settings(stack: Stack) -> dict[str, Any]:
    return {
        "prometheus_url": stack.prometheus.url,
        "alert_rules_dir": stack.rules_dir,
        "alertmanager_url": stack.alertmanager.url,
        "smtp_host": "127.0.0.1",
        "smtp_port": stack.smtp_port,
        "outbound_allow": "127.0.0.1",  # only this test's own receivers
    }


@dataclass
class Team:
    tenant: str
    dev: Api
    viewer: Api
    stranger: Api  # a developer of another tenant


def team(wharf: Wharf) -> Team:
    dev, viewer, stranger = wharf.user(), wharf.user(), wharf.user()
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi"})
    other = wharf.tenant({"cpu": "4", "memory": "8Gi"})
    members = [{"user": dev.user, "role": "developer"}, {"user": viewer.user, "role": "viewer"}]
    wharf.project(tenant, "shop", {"cpu": "2", "memory": "4Gi"}, members=members)
    wharf.project(other, "shop", {"cpu": "2", "memory": "4Gi"}, members=[
        {"user": stranger.user, "role": "developer"}
    ])  # fmt: skip
    return Team(tenant, dev, viewer, stranger)


def rule(name: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "AlertRule", "metadata": {"name": name}, "spec": {"project": "shop", **spec}}


def refused(api: Api, path: str, body: dict[str, Any], status: int, where: str = "") -> str:
    answer = api.put(path, body)
    assert answer.status_code == status, answer.text
    if where:
        assert answer.json()["field"] == where, answer.text
    return str(answer.json()["message"])


def loaded_groups(prometheus: Prometheus) -> dict[str, str]:
    """Prometheus' loaded rule groups: name -> the expression of its rule."""
    body = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=5).json()
    return {g["name"]: g["rules"][0]["query"] for g in body["data"]["groups"]}


def test_rules_are_checked_confined_rendered_and_reloaded(wharf: Wharf, stack: Stack):
    t = team(wharf)
    path = f"/api/v1/tenants/{t.tenant}/alertrules"
    t.dev.ok("PUT", f"{path}/restarts", json=rule("restarts", template="podRestarting"))
    t.dev.ok("PUT", f"{path}/custom", json=rule("custom", expr="up == 0", severity="critical"))

    groups = wait_for(
        lambda: (
            {g: q for g, q in loaded_groups(stack.prometheus).items() if t.tenant in g}
            if len([g for g in loaded_groups(stack.prometheus) if t.tenant in g]) == 2
            else None
        ),
        what="both rules loaded by Prometheus",
    )
    assert groups[f"{t.tenant}/custom"] == f'up{{project="shop",tenant="{t.tenant}"}} == 0'
    assert f'project="shop",tenant="{t.tenant}"' in groups[f"{t.tenant}/restarts"]
    ready = t.dev.ok("GET", f"{path}/custom")["status"]["conditions"]
    assert [(c["type"], c["status"], c["reason"]) for c in ready] == [("Ready", "True", "Loaded")]

    # Refused before anything is saved, naming the field: by the parser, by the confinement,
    # and by Prometheus itself.
    assert "not valid PromQL" in refused(
        t.dev, f"{path}/bad", rule("bad", expr="rate(up[5m]"), 422, "spec.expr"
    )
    hostile = rule("bad", expr='sum(up{tenant="someone-else"})')
    assert "names a tenant" in refused(t.dev, f"{path}/bad", hostile, 422, "spec.expr")
    wide = rule("bad", expr='up{project=~".+"}')
    assert "names a project" in refused(t.dev, f"{path}/bad", wide, 422, "spec.expr")
    unknown = rule("bad", expr='sort_by_label(up, "a")')
    assert "Prometheus refuses it" in refused(t.dev, f"{path}/bad", unknown, 422, "spec.expr")
    refused(
        t.dev,
        f"{path}/bad",
        rule("bad", template="podNotReady", **{"for": "soon"}),
        422,
        "spec.for",
    )
    assert t.dev.get(f"{path}/bad").status_code == 404

    # A viewer may not write rules; another tenant does not see them.
    refused(t.viewer, f"{path}/mine", rule("mine", template="podNotReady"), 403)
    assert t.stranger.get(f"{path}/custom").status_code == 404
    refused(t.stranger, f"{path}/mine", rule("mine", template="podNotReady"), 404)

    # Nothing changed: a full resync writes no file and reloads nothing.
    files = wharf.platform.rule_files
    writes, reloads, before = files.writes, files.reloads, files.controller.reconciles
    wharf.platform._loop.call_soon_threadsafe(files.controller.queue_all)
    wait_for(lambda: files.controller.reconciles >= before + 2, what="a resync of the rules")
    assert (files.writes, files.reloads) == (writes, reloads)

    t.dev.ok("DELETE", f"{path}/custom", params={"confirm": "custom"})
    wait_for(
        lambda: f"{t.tenant}/custom" not in loaded_groups(stack.prometheus),
        what="the deleted rule unloaded",
    )
    assert not (stack.rules_dir / f"{t.tenant}--custom.yml").exists()


def alert(tenant: str, rule_name: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {
            "tenant": tenant,
            "project": "shop",
            "wharf_rule": rule_name,
            "app": "web",
            "cluster": "lab1",
            **labels,
        },
        "annotations": {"summary": "web restarts"},
    }


def post(wharf: Wharf, alerts: list[dict[str, Any]], token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = {"version": "4", "status": alerts[0]["status"], "alerts": alerts}
    return wharf.client.post("/api/v1/alerting/receiver", json=body, headers=headers)


def audited(wharf: Wharf, tenant: str, action: str) -> list[str]:
    with wharf.platform.db.reader() as session:
        rows = session.execute(
            select(audit_events.c.outcome).where(
                audit_events.c.tenant == tenant, audit_events.c.action == action
            )
        )
        return [r.outcome for r in rows]


def test_alerts_become_incidents_people_work_on_and_silence(wharf: Wharf, stack: Stack):
    t = team(wharf)
    t.dev.ok(
        "PUT",
        f"/api/v1/tenants/{t.tenant}/alertrules/restarts",
        json=rule("restarts", template="podRestarting", severity="critical"),
    )
    token = wharf.platform.alerting.token
    firing = alert(t.tenant, "restarts")

    # Only Alertmanager, with Wharf's token, is heard.
    assert post(wharf, [firing], None).status_code == 401
    assert post(wharf, [firing], token + "x").status_code == 401
    assert post(wharf, [firing], "").status_code == 401

    # Alerts that name a tenant or project that does not own the rule are ignored.
    counts = post(
        wharf,
        [alert(t.tenant, "restarts", project="other"), alert(t.tenant, "nosuchrule"),
         alert("someone-else", "restarts")],
        token,
    ).json()  # fmt: skip
    assert counts == {"opened": 0, "resolved": 0, "ignored": 3}
    assert post(wharf, [firing], token).json()["opened"] == 1
    assert post(wharf, [firing], token).json()["opened"] == 0  # the same group: still one

    incidents = f"/api/v1/tenants/{t.tenant}/incidents"
    (incident,) = t.viewer.ok("GET", incidents)["items"]
    assert (incident["state"], incident["application"], incident["cluster"]) == (
        "open",
        "web",
        "lab1",
    )
    assert incident["severity"] == "critical"
    assert incident["links"] == {
        "logs": f"/console/tenants/{t.tenant}/applications/web/logs",
        "charts": f"/console/tenants/{t.tenant}/projects/shop/metrics?app=web&cluster=lab1",
    }
    # The project's charts page is there for whoever reads the incident (the application
    # `web` is only a label of the alert here: no such application was delivered).
    charts = t.viewer.get(incident["links"]["charts"].split("?")[0])
    assert charts.status_code == 200, charts.text
    one = f"{incidents}/{incident['id']}"

    # Another tenant finds nothing, whatever it asks; a viewer reads but may not act.
    assert t.stranger.get(incidents).status_code == 404
    assert t.stranger.get(one).status_code == 404
    assert t.stranger.request("POST", f"{one}/ack", json={}).status_code == 404
    assert t.viewer.request("POST", f"{one}/ack", json={}).status_code == 403

    t.dev.ok("POST", f"{one}/ack", json={"text": "looking"})
    t.dev.ok("POST", f"{one}/assign", json={"assignee": t.dev.user})
    t.dev.ok("POST", f"{one}/note", json={"text": "the new image crashes on start"})
    assert t.dev.request("POST", f"{one}/note", json={"text": " "}).json()["field"] == "text"
    assert post(wharf, [alert(t.tenant, "restarts", "resolved")], token).json()["resolved"] == 1
    done = t.dev.ok("GET", one)
    assert done["state"] == "resolved"
    assert done["assignee"] == t.dev.user
    assert [(e["actor"], e["action"]) for e in done["timeline"]] == [
        ("alertmanager", "opened"),
        (t.dev.user, "acknowledged"),
        (t.dev.user, "assigned"),
        (t.dev.user, "note"),
        ("alertmanager", "resolved"),
    ]
    assert t.dev.ok("GET", incidents, params={"state": "open"})["items"] == []
    assert audited(wharf, t.tenant, "incident-ack") == ["denied", "allowed"]

    # Silences: created in Alertmanager with the project's matchers, until a time, audited.
    silences = f"/api/v1/tenants/{t.tenant}/silences"
    ends = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    ask = {"project": "shop", "rule": "restarts", "endsAt": ends, "comment": "deploying a fix"}
    assert t.viewer.request("POST", silences, json=ask).status_code == 403
    assert t.stranger.request("POST", silences, json=ask).status_code == 404
    past = {**ask, "endsAt": "2020-01-01T00:00:00Z"}
    assert t.dev.request("POST", silences, json=past).json()["field"] == "endsAt"
    made = t.dev.ok("POST", silences, json=ask)
    held = httpx.get(f"{stack.alertmanager.url}/api/v2/silence/{made['id']}").json()
    assert {(m["name"], m["value"]) for m in held["matchers"]} == {
        ("tenant", t.tenant), ("project", "shop"), ("wharf_rule", "restarts")
    }  # fmt: skip
    assert [s["id"] for s in t.viewer.ok("GET", silences)["items"]] == [made["id"]]
    assert t.stranger.get(silences).status_code == 404
    t.dev.ok("DELETE", f"{silences}/{made['id']}")
    assert t.dev.ok("GET", silences)["items"] == []
    assert audited(wharf, t.tenant, "silence-create") == ["denied", "allowed"]
    assert audited(wharf, t.tenant, "silence-expire") == ["allowed"]


def channel(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "kind": "NotificationChannel",
        "metadata": {"name": name},
        "spec": {"project": "shop", **spec},
    }


def test_channels_are_checked_and_tested_by_email(wharf: Wharf, stack: Stack):
    t = team(wharf)
    path = f"/api/v1/tenants/{t.tenant}/notificationchannels"
    secret = uuid.uuid4().hex
    for url in ("http://127.0.0.2:8080/hook", "http://169.254.169.254/latest/meta-data/",
                "http://metadata.google.internal/x"):  # fmt: skip
        body = channel("hook", type="webhook", url=url, secret=secret)
        assert "spec.url" in refused(t.dev, f"{path}/hook", body, 422, "spec.url")
    refused(
        t.dev,
        f"{path}/hook",
        channel("hook", type="webhook", url="http://127.0.0.1:9/"),
        422,
        "spec.secret",
    )
    refused(
        t.dev,
        f"{path}/mail",
        channel("mail", type="email", to=["not-an-address"]),
        422,
        "spec.to[0]",
    )
    refused(t.viewer, f"{path}/mail", channel("mail", type="email", to=["ops@example.com"]), 403)

    t.dev.ok("PUT", f"{path}/mail", json=channel("mail", type="email", to=["ops@example.com"]))
    assert t.viewer.request("POST", f"{path}/mail/test").status_code == 403
    assert t.stranger.request("POST", f"{path}/mail/test").status_code == 404
    assert t.dev.ok("POST", f"{path}/mail/test") == {"delivered": True, "error": ""}
    mail = wait_for(
        lambda: [m for m in stack.mailbox.messages if f"sent by {t.dev.user}" in m],
        what="the test mail",
    )
    assert "To: ops@example.com" in mail[0]

    # An SMTP server that refuses: a clear failed status on the channel, not a 5xx.
    t.dev.ok("PUT", f"{path}/bounce", json=channel("bounce", type="email", to=[REFUSED_ADDRESS]))
    answer = t.dev.ok("POST", f"{path}/bounce/test")
    assert answer["delivered"] is False
    assert "550" in answer["error"]
    (delivered,) = t.dev.ok("GET", f"{path}/bounce")["status"]["conditions"]
    assert (delivered["type"], delivered["status"]) == ("Delivered", "False")
    assert audited(wharf, t.tenant, "channel-test") == ["denied", "allowed", "allowed"]
