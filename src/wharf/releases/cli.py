"""`wharf release status|promote|pause|resume|abort APP -t TENANT`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from wharf.core.apiclient import ApiClient, ApiError, fail

release_cli = typer.Typer(help="Progressive releases: status, promote, pause, resume, abort.")
Tenant = Annotated[str, typer.Option("--tenant", "-t")]


def _path(tenant: str, name: str) -> str:
    return f"/api/v1/tenants/{tenant}/applications/{name}/release"


def _show(release: dict[str, Any]) -> None:
    paused = " (paused)" if release["paused"] else ""
    typer.echo(
        f"release of {release['application']}: revision {release['stableRevision']} -> "
        f"{release['revision']}, {release['phase']}{paused}"
    )
    if release.get("message"):
        typer.echo(f"  {release['message']}")
    for i, wave in enumerate(release["waves"]):
        marker = "*" if i == release["wave"] else " "
        for cluster in wave:
            st = release["clusters"].get(cluster, {})
            weight = f", weight {st['weight']}" if "weight" in st else ""
            typer.echo(
                f" {marker} wave {i} {cluster}: {st.get('phase')} at step {st.get('step')}{weight}"
            )
    for m in release.get("measurements", [])[-10:]:
        typer.echo(
            f"    {m['time']} {m['cluster']} step {m['step']} {m['template']}/{m['metric']}: "
            f"{m['phase']} {m['value'] if m['value'] is not None else m['message']}"
        )


@release_cli.command("status")
def status(name: str, tenant: Tenant) -> None:
    """Show the release: waves, each cluster's step and phase, the latest measurements."""
    try:
        _show(ApiClient().json("GET", _path(tenant, name)))
    except ApiError as exc:
        raise fail(exc) from None


def _operation(operation: str, help_text: str) -> None:
    def run(name: str, tenant: Tenant) -> None:
        try:
            _show(ApiClient().json("POST", f"{_path(tenant, name)}/{operation}"))
        except ApiError as exc:
            raise fail(exc) from None

    run.__doc__ = help_text
    release_cli.command(operation)(run)


_operation("promote", "Go on past a pause or an inconclusive analysis.")
_operation("pause", "Stop the release where it is until resumed.")
_operation("resume", "Go on after a pause.")
_operation("abort", "Stop the release and roll back every cluster it changed.")
_operation("retry", "Run a failed or aborted release again from its first step.")
_operation("skip-analysis", "Move clusters at an analysis step past it, unjudged (audited).")


def register(app: typer.Typer) -> None:
    app.add_typer(release_cli, name="release")
