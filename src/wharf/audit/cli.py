"""`wharf audit`: the audit trail the caller may see, newest first."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from wharf.core.apiclient import ApiClient, ApiError, fail


def register(app: typer.Typer) -> None:
    @app.command()
    def audit(
        tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
        actor: Annotated[str | None, typer.Option(help="who")] = None,
        kind: Annotated[str | None, typer.Option(help="Tenant, Project, Cluster, …")] = None,
        action: Annotated[str | None, typer.Option(help="apply, delete, login, …")] = None,
        outcome: Annotated[str | None, typer.Option(help="allowed, denied or failed")] = None,
        since: Annotated[str | None, typer.Option(help="ISO time")] = None,
        limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
        output: Annotated[str, typer.Option("--output", "-o", help="table or json")] = "table",
    ) -> None:
        """Show audit events: who did what, where, when, and whether it was allowed."""
        params = {
            "tenant": tenant,
            "actor": actor,
            "kind": kind,
            "action": action,
            "outcome": outcome,
            "since": since,
            "limit": limit,
        }
        try:
            items = ApiClient().json(
                "GET", "/api/v1/audit", params={k: v for k, v in params.items() if v}
            )["items"]
        except ApiError as exc:
            raise fail(exc) from None
        if output == "json":
            typer.echo(json.dumps(items, indent=2))
            return
        typer.echo(f"{'TIME':<22}{'ACTOR':<14}{'ACTION':<18}{'OBJECT':<32}{'OUTCOME':<9}DETAIL")
        for e in items:
            obj = f"{e['kind']}/{e['tenant'] + '/' if e['tenant'] else ''}{e['name']}"
            detail = e["reason"] or ", ".join(d["path"] for d in e["diff"][:4])
            typer.echo(
                f"{e['time']:<22}{e['actor']:<14}{e['action']:<18}{obj:<32}"
                f"{e['outcome']:<9}{detail}"
            )
