"""`wharf cluster register NAME --kubeconfig FILE`: add a cluster the way `karmadactl join` does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wharf.core.apiclient import ApiClient, ApiError, fail

cluster_app = typer.Typer(help="Register clusters.")


@cluster_app.command("register")
def register_cluster(
    name: str,
    kubeconfig: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="admin kubeconfig")],
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="k=v, repeatable")
    ] = None,
) -> None:
    """Register (or update) a cluster from a kubeconfig; its credentials are sealed at rest."""
    labels = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--label {item!r}: use key=value")
        labels[key] = value
    body = {
        "apiVersion": "wharf.io/v1",
        "kind": "Cluster",
        "metadata": {"name": name, "labels": labels},
        "spec": {"kubeconfig": kubeconfig.read_text()},
    }
    try:
        response = ApiClient().request("PUT", f"/api/v1/clusters/{name}", json=body)
    except ApiError as exc:
        raise fail(exc) from None
    typer.echo(f"cluster/{name} {'registered' if response.status_code == 201 else 'updated'}")


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
