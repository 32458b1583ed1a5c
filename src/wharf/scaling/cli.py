"""`wharf scale APP --replicas N [--cluster C] -t TENANT`."""

from __future__ import annotations

from typing import Annotated

import typer

from wharf.core.apiclient import ApiClient, ApiError, fail


def scale(
    name: str,
    tenant: Annotated[str, typer.Option("--tenant", "-t")],
    replicas: Annotated[int, typer.Option("--replicas", min=0, max=1000, help="Replicas")],
    cluster: Annotated[
        str | None, typer.Option("--cluster", help="Only in this cluster (default: all)")
    ] = None,
) -> None:
    """Scale an application by hand, in every cluster or in one (checked against quota)."""
    body: dict[str, object] = {"replicas": replicas}
    if cluster:
        body["cluster"] = cluster
    try:
        ApiClient().json("POST", f"/api/v1/tenants/{tenant}/applications/{name}/scale", json=body)
    except ApiError as exc:
        raise fail(exc) from None
    where = f" in {cluster}" if cluster else ""
    typer.echo(f"application {name} scaled to {replicas} replicas{where}")


def register(app: typer.Typer) -> None:
    app.command("scale")(scale)
