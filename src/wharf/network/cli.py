"""`wharf reach` (may A reach B on port P?) and `wharf nodeports`."""

from __future__ import annotations

from typing import Annotated

import typer

from wharf.core.apiclient import ApiClient, ApiError, fail

Tenant = Annotated[str, typer.Option("--tenant", "-t")]


def reach(
    source: Annotated[str, typer.Argument(help="project/application, an IP address, or dns")],
    target: Annotated[str, typer.Argument(help="project/application, an IP address, or dns")],
    port: Annotated[int, typer.Argument(help="TCP port")],
    tenant: Tenant,
    env: Annotated[str, typer.Option("--env", "-e", help="The environment")] = "dev",
) -> None:
    """May SOURCE reach TARGET on PORT, by the NetworkPolicies Wharf renders? Exit 1 if not."""
    params = {"env": env, "from": source, "to": target, "port": port}
    try:
        answer = ApiClient().json("GET", f"/api/v1/tenants/{tenant}/reachability", params=params)
    except ApiError as exc:
        raise fail(exc) from None
    verdict = "allowed" if answer["allowed"] else "denied"
    typer.echo(f"{source} -> {target}:{port} ({env}): {verdict}")
    for reason in answer["reasons"]:
        typer.echo(f"  {reason}")
    if not answer["allowed"]:
        raise typer.Exit(1)


def nodeports(tenant: Tenant) -> None:
    """A tenant's node port ranges and the ports its applications hold."""
    try:
        answer = ApiClient().json("GET", f"/api/v1/tenants/{tenant}/nodeports")
    except ApiError as exc:
        raise fail(exc) from None
    for r in answer["ranges"]:
        typer.echo(f"range\t{r['cluster']}\t{r['first']}-{r['last']}")
    for p in answer["ports"]:
        typer.echo(
            f"{p['cluster']}\t{p['nodePort']}\t{p['project']}/{p['application']}\t"
            f"{p['service']}:{p['port']}"
        )


def register(app: typer.Typer) -> None:
    app.command("reach")(reach)
    app.command("nodeports")(nodeports)
