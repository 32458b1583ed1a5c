"""`wharf top -t TENANT [--project P] [APP]`: each pod's latest use, as `kubectl top` prints."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from wharf.core.apiclient import ApiClient, ApiError, fail

MIB = 2**20


def _project_of(client: ApiClient, tenant: str, app: str) -> str:
    answer = client.json("GET", f"/api/v1/tenants/{tenant}/applications/{app}")
    return str(answer["spec"]["project"])


def _row(pod: dict[str, Any]) -> str:
    cpu = "-" if pod["cpu"] is None else f"{round(pod['cpu'] * 1000)}m"
    memory = "-" if pod["memory"] is None else f"{round(pod['memory'] / MIB)}Mi"
    ready = "yes" if pod["ready"] else "no"
    return (
        f"{pod['pod']:<40} {pod['app']:<20} {pod['cluster']:<10} {cpu:>10} {memory:>12} "
        f"{pod['restarts']:>8}  {ready}"
    )


def top(
    app: Annotated[str | None, typer.Argument(help="One application; all when left out")] = None,
    tenant: Annotated[str, typer.Option("--tenant", "-t")] = "",
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Default: the application's")
    ] = None,
) -> None:
    """Each pod's CPU, memory, restarts and readiness, from Prometheus (newest figures)."""
    if not tenant or not (project or app):
        raise typer.BadParameter("give --tenant, and --project or an application")
    client = ApiClient()
    try:
        project = project or _project_of(client, tenant, str(app))
        params = f"?app={app}" if app else ""
        answer = client.json("GET", f"/api/v1/tenants/{tenant}/projects/{project}/top{params}")
    except ApiError as exc:
        raise fail(exc) from None
    typer.echo(
        f"{'NAME':<40} {'APP':<20} {'CLUSTER':<10} {'CPU(cores)':>10} {'MEMORY(bytes)':>12} "
        f"{'RESTARTS':>8}  READY"
    )
    for pod in answer["pods"]:
        typer.echo(_row(pod))


def register(app: typer.Typer) -> None:
    app.command("top")(top)
