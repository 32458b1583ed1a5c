"""`wharf kubeconfig --tenant T --project P --env E`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from wharf.core.apiclient import ApiClient, ApiError, fail


def register(app: typer.Typer) -> None:
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
