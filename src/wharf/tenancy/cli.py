"""`wharf kubeconfig --tenant T --project P --env E`, and the quota section of `wharf describe`
for tenants and projects."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from wharf.core.apiclient import ApiClient, ApiError, fail
from wharf.resources.cli import DESCRIBERS, aligned
from wharf.tenancy.model import spelled_as


def describe_quota(obj: dict[str, Any]) -> list[str]:
    """Quota, what is handed out (tenants) and what is used, one row per resource under the
    name the quota gives it: usage comes in the clusters' names (requests.cpu for cpu)."""
    quota = obj["spec"].get("quota") or {}
    if not quota:
        return ["Quota:        <none>"]
    status = obj.get("status") or {}
    shown = ["used"] if obj["kind"] == "Project" else ["allocated", "used"]
    columns = {name: spelled_as(status.get(name), quota) for name in shown}
    rows = [["RESOURCE", "HARD", *(name.upper() for name in shown)]]
    rows += [[k, v, *(columns[name].get(k, "0") for name in shown)] for k, v in quota.items()]
    return ["Quota:", *(f"  {line}" for line in aligned(rows))]


def register(app: typer.Typer) -> None:
    DESCRIBERS["Tenant"] = DESCRIBERS["Project"] = describe_quota

    @app.command()
    def kubeconfig(
        project: Annotated[str, typer.Option("--project", "-p")],
        env: Annotated[str, typer.Option("--env", "-e")],
        tenant: Annotated[str, typer.Option("--tenant", "-t")],
        ttl: Annotated[int, typer.Option(help="token lifetime in seconds")] = 8 * 3600,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="file")] = None,
    ) -> None:
        """Issue a kubeconfig that reaches only this project's namespaces of one environment."""
        try:
            config = ApiClient().json(
                "POST",
                f"/api/v1/tenants/{tenant}/projects/{project}/kubeconfig",
                params={"env": env, "ttl": ttl},
            )
        except ApiError as exc:
            raise fail(exc) from None
        text = yaml.safe_dump(config, sort_keys=False)
        if output:
            output.write_text(text)
            output.chmod(0o600)
            typer.echo(f"kubeconfig written to {output}", err=True)
        else:
            typer.echo(text.rstrip())
