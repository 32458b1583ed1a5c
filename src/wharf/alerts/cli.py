"""`wharf incidents -t TENANT` and `wharf incident show|ack|resolve|note|assign ID -t TENANT`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from wharf.core.apiclient import ApiClient, ApiError, fail

incident_cli = typer.Typer(help="One incident: show it, acknowledge, resolve, add a note.")
Tenant = Annotated[str, typer.Option("--tenant", "-t")]


def _path(tenant: str, incident_id: int | None = None) -> str:
    base = f"/api/v1/tenants/{tenant}/incidents"
    return base if incident_id is None else f"{base}/{incident_id}"


def _line(incident: dict[str, Any]) -> str:
    where = "/".join(x for x in (incident["application"], incident["cluster"]) if x) or "-"
    who = f" @{incident['assignee']}" if incident["assignee"] else ""
    return (
        f"{incident['id']:>5}  {incident['state']:<12} {incident['severity']:<8} "
        f"{incident['project']}/{incident['rule']}  {where}  {incident['openedAt']}{who}"
    )


def _show(incident: dict[str, Any]) -> None:
    typer.echo(_line(incident))
    if incident.get("summary"):
        typer.echo(f"  {incident['summary']}")
    for name, url in incident.get("links", {}).items():
        typer.echo(f"  {name}: {url}")
    for event in incident.get("timeline", []):
        text = f": {event['text']}" if event["text"] else ""
        typer.echo(f"  {event['at']} {event['actor']} {event['action']}{text}")


def incidents(
    tenant: Tenant,
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    state: Annotated[str | None, typer.Option(help="open, acknowledged or resolved")] = None,
) -> None:
    """List the incidents of the projects you read, newest first."""
    params = {k: v for k, v in (("project", project), ("state", state)) if v}
    try:
        items = ApiClient().json("GET", _path(tenant), params=params)["items"]
    except ApiError as exc:
        raise fail(exc) from None
    for incident in items:
        typer.echo(_line(incident))


@incident_cli.command("show")
def show(incident_id: int, tenant: Tenant) -> None:
    """An incident, its links to logs and charts, and its timeline."""
    try:
        _show(ApiClient().json("GET", _path(tenant, incident_id)))
    except ApiError as exc:
        raise fail(exc) from None


def _act(tenant: str, incident_id: int, action: str, body: dict[str, str]) -> None:
    try:
        _show(ApiClient().json("POST", f"{_path(tenant, incident_id)}/{action}", json=body))
    except ApiError as exc:
        raise fail(exc) from None


@incident_cli.command("ack")
def ack(incident_id: int, tenant: Tenant, text: Annotated[str, typer.Option()] = "") -> None:
    """Acknowledge: someone is on it."""
    _act(tenant, incident_id, "ack", {"text": text})


@incident_cli.command("resolve")
def resolve(incident_id: int, tenant: Tenant, text: Annotated[str, typer.Option()] = "") -> None:
    """Resolve it by hand (Alertmanager resolves it when the alert stops firing)."""
    _act(tenant, incident_id, "resolve", {"text": text})


@incident_cli.command("note")
def note(incident_id: int, text: str, tenant: Tenant) -> None:
    """Add a note to its timeline."""
    _act(tenant, incident_id, "note", {"text": text})


@incident_cli.command("assign")
def assign(incident_id: int, user: str, tenant: Tenant) -> None:
    """Assign it to a user."""
    _act(tenant, incident_id, "assign", {"assignee": user})


def register(app: typer.Typer) -> None:
    app.command("incidents")(incidents)
    app.add_typer(incident_cli, name="incident")
