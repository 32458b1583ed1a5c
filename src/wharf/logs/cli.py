"""`wharf logs APP -t TENANT [-f] [--since 5m] [--cluster C] [--tail N] [--pod P]`, and
`wharf logs APP -t TENANT --search TEXT --since 2h [--until …] [--regex] [--limit N] [--all]`.

Lines are printed as stern prints them: `cluster/pod container │ line`, merged by time (a
search prints newest first, page after page with `--all`)."""

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


def _search(client: ApiClient, tenant: str, name: str, params: dict[str, Any], pages: int) -> None:
    path = f"/api/v1/tenants/{tenant}/applications/{name}/logs/search"
    for _ in range(pages):
        page = client.json("GET", path, params=params)
        for entry in page["items"]:
            _print(entry)
        if not page.get("continue"):
            return
        params = {**params, "continue": page["continue"]}
    typer.echo("… more lines: narrow the search or raise --pages", err=True)


def logs(
    name: str,
    tenant: Annotated[str, typer.Option("--tenant", "-t")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines")] = False,
    since: Annotated[str | None, typer.Option(help="How far back: 30s, 5m, 2h (1h)")] = None,
    cluster: Annotated[str | None, typer.Option(help="Only this cluster")] = None,
    pod: Annotated[str | None, typer.Option(help="Only this pod")] = None,
    tail: Annotated[int | None, typer.Option(help="Lines from the end (default 500)")] = None,
    search: Annotated[
        str | None,
        typer.Option(help="Search the collected history for this text (needs --since)"),
    ] = None,
    until: Annotated[str | None, typer.Option(help="Search: end (default now)")] = None,
    regex: Annotated[bool, typer.Option(help="Search: the text is an RE2 pattern")] = False,
    limit: Annotated[int | None, typer.Option(help="Search: lines per page (100)")] = None,
    pages: Annotated[int, typer.Option(min=1, max=100, help="Search: pages at most")] = 1,
) -> None:
    """Print an application's logs from all its clusters, labelled by cluster and pod; with
    --search, lines from the log store's history instead, newest first."""
    client = ApiClient()
    if search is not None:
        asked = {"q": search, "since": since, "until": until, "cluster": cluster, "pod": pod}
        query: dict[str, Any] = {k: v for k, v in asked.items() if v is not None}
        if regex:
            query["regex"] = True
        if limit is not None:
            query["limit"] = limit
        try:
            _search(client, tenant, name, query, pages)
        except ApiError as exc:
            raise fail(exc) from None
        return
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
