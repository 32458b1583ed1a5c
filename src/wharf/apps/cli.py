"""`wharf app status|history|diff|rollback` and `wharf template import`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from wharf.apps.model import import_yaml
from wharf.core.apiclient import ApiClient, ApiError, fail
from wharf.core.errors import InvalidError

app_cli = typer.Typer(help="Application status, history and rollback.")
template_cli = typer.Typer(help="Application templates.")
Tenant = Annotated[str, typer.Option("--tenant", "-t")]


def _base(tenant: str, name: str) -> str:
    return f"/api/v1/tenants/{tenant}/applications/{name}"


def cluster_progress(state: dict[str, Any]) -> str:
    """One cluster's line: its state, ready replicas, and why it is not Available yet."""
    workloads = state.get("workloads", [])
    parts = [state.get("state", "Pending")]
    if workloads:
        ready = sum(w.get("ready", 0) for w in workloads)
        parts.append(f"{ready}/{sum(w.get('desired', 0) for w in workloads)} ready")
    if state.get("state") in ("Failed", "Unreachable"):
        parts.append(state.get("message", ""))
    elif state.get("state") != "Available":
        warnings = [e for e in state.get("events", []) if e.get("type") == "Warning"]
        if warnings:  # what holds the rollout up: quota, scheduling, image pulls
            parts.append(f"{warnings[-1]['reason']}: {warnings[-1]['message']}")
    return ", ".join(p for p in parts if p)


def rollout_failure(status: dict[str, Any]) -> str | None:
    """Why the rollout cannot finish without a new revision, if it cannot: a cluster refused
    it, or no cluster could take it. An unreachable cluster may come back, so it is waited for."""
    clusters = sorted((status.get("clusters") or {}).items())
    refused = [f"{n}: {c.get('message', '')}" for n, c in clusters if c["state"] == "Failed"]
    if refused:
        return "; ".join(refused)
    if status.get("state") == "Failed":
        return str(status.get("reason", "failed"))
    return None


def _print_progress(status: dict[str, Any], shown: dict[str, str]) -> None:
    """Each cluster's line, when it differs from the one shown before."""
    for cluster, state in sorted((status.get("clusters") or {}).items()):
        line = cluster_progress(state)
        if shown.get(cluster) != line:
            typer.echo(f"  {cluster}: {line}")
            shown[cluster] = line


def _settled(name: str, status: dict[str, Any]) -> bool:
    """True once Available (said so); exits 1, saying why, once it has failed."""
    if status.get("state") == "Available":
        where = ", ".join(sorted(status.get("clusters") or {}))
        typer.echo(f"application/{name} is Available in {where} (revision {status['revision']})")
        return True
    failure = rollout_failure(status)
    if failure:
        typer.secho(f"error: application/{name} failed: {failure}", err=True, fg="red")
        raise typer.Exit(1)
    return False


@app_cli.command("status")
def status(
    name: str,
    tenant: Tenant,
    watch: Annotated[
        bool, typer.Option("--watch/--no-watch", "-w", help="follow until Available or failed")
    ] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait before giving up")] = 300,
) -> None:
    """Print the application's progress in each cluster until it is Available (exit 0) or
    fails (exit 1, saying why), as `kubectl rollout status` does for a Deployment."""
    client, deadline, shown = ApiClient(), time.monotonic() + timeout, dict[str, str]()
    typer.echo(f"Waiting for application {name} (tenant {tenant}) to be Available")
    while True:
        try:
            app = client.json("GET", _base(tenant, name))
        except ApiError as exc:
            raise fail(exc) from None
        st = app["status"]
        fresh = st.get("observedGeneration") == app["metadata"]["generation"]
        if fresh:
            _print_progress(st, shown)
            if _settled(name, st):
                return
        elif not shown:
            typer.echo("  Pending: the controller has not picked up this revision yet")
            shown[""] = "Pending"
        if not watch:
            return
        if time.monotonic() > deadline:
            why = st.get("reason") if fresh else "the controller has not picked it up yet"
            typer.secho(
                f"error: application/{name} is not Available after {timeout:g}s: "
                f"{st.get('state', 'Pending')}, {why}",
                err=True,
                fg="red",
            )
            raise typer.Exit(1)
        time.sleep(1)


@app_cli.command("history")
def history(name: str, tenant: Tenant) -> None:
    """List every revision of an application: who delivered what, when, and why."""
    try:
        items = ApiClient().json("GET", f"{_base(tenant, name)}/revisions")["items"]
    except ApiError as exc:
        raise fail(exc) from None
    typer.echo(f"{'REVISION':<10}{'TIME':<22}{'ACTOR':<14}{'TEMPLATE':<24}REASON")
    for r in items:
        template = f"{r['template']['name']}@{r['template']['version']}"
        typer.echo(f"{r['revision']:<10}{r['time']:<22}{r['actor']:<14}{template:<24}{r['reason']}")


@app_cli.command("diff")
def diff(
    name: str,
    tenant: Tenant,
    from_: Annotated[int, typer.Option("--from")],
    to: Annotated[int, typer.Option("--to")],
) -> None:
    """Show what changed between two revisions (secret values masked)."""
    try:
        answer = ApiClient().json(
            "GET", f"{_base(tenant, name)}/revisions/diff", params={"from": from_, "to": to}
        )
    except ApiError as exc:
        raise fail(exc) from None
    for change in answer["changes"]:
        typer.echo(f"{change['path']}: {json.dumps(change['old'])} -> {json.dumps(change['new'])}")


@app_cli.command("rollback")
def rollback(
    name: str, tenant: Tenant, to: Annotated[int, typer.Option("--to", help="revision")]
) -> None:
    """Deliver an earlier revision again, to every cluster (it becomes the newest revision)."""
    try:
        ApiClient().json("POST", f"{_base(tenant, name)}/rollback", params={"revision": to})
    except ApiError as exc:
        raise fail(exc) from None
    typer.echo(f"application/{name} rolled back to revision {to}")


@template_cli.command("import")
def import_template(
    filename: Annotated[Path, typer.Option("--filename", "-f", exists=True, dir_okay=False)],
    name: Annotated[str, typer.Option(help="template name")],
    version: Annotated[str, typer.Option(help="semantic version")] = "1.0.0",
    publish: Annotated[bool, typer.Option(help="publish it (then it cannot change)")] = False,
) -> None:
    """Import raw Kubernetes YAML whose parameters are marked ${name} as a template version."""
    try:
        tv = import_yaml(filename.read_text(), version)
    except InvalidError as exc:
        typer.secho(f"error: {filename}: {exc.message}", err=True, fg="red")
        raise typer.Exit(1) from None
    tv.published = publish
    client = ApiClient()
    try:
        try:
            current = client.json("GET", f"/api/v1/apptemplates/{name}")
            versions = [v for v in current["spec"]["versions"] if v["version"] != version]
        except ApiError as exc:
            if exc.status_code != 404:
                raise
            versions = []
        body = {
            "kind": "AppTemplate",
            "metadata": {"name": name},
            "spec": {"versions": [*versions, tv.model_dump(mode="json")]},
        }
        client.json("PUT", f"/api/v1/apptemplates/{name}", json=body)
    except ApiError as exc:
        raise fail(exc) from None
    params = ", ".join(tv.parameters["required"]) or "none"
    typer.echo(f"apptemplate/{name} {version} imported (parameters: {params})")


def register(app: typer.Typer) -> None:
    app.add_typer(app_cli, name="app")
    app.add_typer(template_cli, name="template")
