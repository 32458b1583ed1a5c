"""`wharf app history|diff|rollback` and `wharf template import`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from wharf.apps.model import import_yaml
from wharf.core.apiclient import ApiClient, ApiError, fail
from wharf.core.errors import InvalidError

app_cli = typer.Typer(help="Application history and rollback.")
template_cli = typer.Typer(help="Application templates.")
Tenant = Annotated[str, typer.Option("--tenant", "-t")]


def _base(tenant: str, name: str) -> str:
    return f"/api/v1/tenants/{tenant}/applications/{name}"


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
