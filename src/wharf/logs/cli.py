"""`wharf logs APP -t TENANT [-f] [--since 5m] [--cluster C] [--tail N] [--pod P]`.

Lines are printed as stern prints them: `cluster/pod container │ line`, merged by time."""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer

from wharf.core.apiclient import ApiClient, ApiError, fail


def _print(entry: dict[str, Any]) -> None:
    typer.echo(f"{entry['cluster']}/{entry['pod']} {entry['container']} │ {entry['line']}")


def _follow(client: ApiClient, path: str, params: dict[str, Any]) -> None:
    with client.http.stream("GET", path, params=params, timeout=None) as response:
        if response.status_code >= 400:
            response.read()
            client.request("GET", path, params={**params, "follow": False})  # raises its error
        for line in response.iter_lines():
            if line.startswith("data: {"):
                _print(json.loads(line[6:]))


def logs(
    name: str,
    tenant: Annotated[str, typer.Option("--tenant", "-t")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines")] = False,
    since: Annotated[str | None, typer.Option(help="How far back: 30s, 5m, 2h (1h)")] = None,
    cluster: Annotated[str | None, typer.Option(help="Only this cluster")] = None,
    pod: Annotated[str | None, typer.Option(help="Only this pod")] = None,
    tail: Annotated[int | None, typer.Option(help="Lines from the end (default 500)")] = None,
) -> None:
    """Print an application's logs from all its clusters, labelled by cluster and pod."""
    client = ApiClient()
    path = f"/api/v1/tenants/{tenant}/applications/{name}/logs"
    params: dict[str, Any] = {"follow": follow}
    for key, value in (("since", since), ("cluster", cluster), ("pod", pod), ("tail", tail)):
        if value is not None:
            params[key] = value
    try:
        if follow:
            _follow(client, path, params)
            return
        for entry in client.json("GET", path, params=params)["items"]:
            _print(entry)
    except ApiError as exc:
        raise fail(exc) from None
    except (httpx.TransportError, KeyboardInterrupt):
        return


def register(app: typer.Typer) -> None:
    app.command("logs")(logs)
