"""kubectl-like verbs for every kind: `wharf apply -f`, `get`, `describe`, `delete`, `explain`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from wharf.core import documents
from wharf.core.apiclient import ApiClient, ApiError, fail
from wharf.core.errors import NotFoundError
from wharf.resources.explain import explain

# What a capability adds to `wharf describe` for its kinds (as kubectl has a describer per kind):
# kind -> the lines of its extra sections.
DESCRIBERS: dict[str, Callable[[dict[str, Any]], list[str]]] = {}

TenantOption = Annotated[
    str | None, typer.Option("--tenant", "-t", help="Tenant of tenant-scoped kinds (projects)")
]
OutputOption = Annotated[str, typer.Option("--output", "-o", help="table, wide, yaml, json, name")]


class Kinds:
    """The server's kinds, resolved by name, plural or short name (as kubectl does)."""

    def __init__(self, client: ApiClient) -> None:
        self.items: list[dict[str, Any]] = client.json("GET", "/api/v1/kinds")["items"]

    def find(self, name: str) -> dict[str, Any]:
        lowered = name.lower()
        for kind in self.items:
            names = {kind["kind"].lower(), kind["plural"], *kind["shortNames"]}
            if lowered in names:
                return kind
        known = ", ".join(k["plural"] for k in self.items)
        raise ApiError(0, {"message": f"unknown kind {name!r}; known kinds: {known}"})


def collection_path(kind: dict[str, Any], tenant: str | None) -> str:
    if kind["scope"] == "platform":
        return f"/api/v1/{kind['plural']}"
    if not tenant:
        raise ApiError(0, {"message": f"{kind['plural']} belong to a tenant: pass --tenant"})
    return f"/api/v1/tenants/{tenant}/{kind['plural']}"


def _lookup(obj: dict[str, Any], dotted: str) -> str:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _age(obj: dict[str, Any]) -> str:
    import datetime as dt

    created = obj["metadata"].get("creationTimestamp")
    if not created:
        return ""
    seconds = (
        dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    ).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def print_table(kind: dict[str, Any], items: list[dict[str, Any]], wide: bool) -> None:
    columns = [("NAME", "metadata.name")]
    if kind["scope"] == "tenant":
        columns.insert(0, ("TENANT", "metadata.tenant"))
    columns += [tuple(c) for c in kind["columns"]]
    if wide:
        columns.append(("LABELS", "metadata.labels"))
    rows = [[_lookup(i, path) for _, path in columns] + [_age(i)] for i in items]
    header = [title for title, _ in columns] + ["AGE"]
    for line in aligned([header, *rows]):
        typer.echo(line)


def aligned(rows: list[list[str]]) -> list[str]:
    """Rows as lines of left-aligned columns, as kubectl prints its tables."""
    widths = [max(len(str(x)) for x in col) for col in zip(*rows, strict=True)]
    return [
        "   ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _emit(data: Any, output: str) -> None:
    if output == "json":
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


def register(app: typer.Typer) -> None:
    @app.command("apply")
    def apply(
        filename: Annotated[
            str, typer.Option("--filename", "-f", help="YAML file, or - for stdin")
        ],
        tenant: TenantOption = None,
    ) -> None:
        """Create or update resources from a YAML file (several documents allowed)."""
        text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
        client = ApiClient()
        try:
            docs = [d for d in documents.load_all(text) if d]
        except yaml.YAMLError as exc:
            typer.secho(f"error: {filename} is not valid YAML: {exc}", err=True, fg="red")
            raise typer.Exit(1) from None
        if not all(isinstance(d, dict) for d in docs):
            typer.secho(f"error: {filename}: every document must be a mapping", err=True, fg="red")
            raise typer.Exit(1)
        failed = False
        for doc in docs:
            if tenant and isinstance(doc.get("metadata"), dict):
                doc["metadata"].setdefault("tenant", tenant)
            try:
                response = client.request("POST", "/api/v1/apply", json=doc)
            except ApiError as exc:
                name = doc.get("metadata", {}).get("name", "?")
                typer.secho(
                    f"{doc.get('kind', '?').lower()}/{name}: {exc.message}", err=True, fg="red"
                )
                failed = True
                continue
            obj = response.json()
            verb = "created" if response.status_code == 201 else "configured"
            typer.echo(f"{obj['kind'].lower()}/{obj['metadata']['name']} {verb}")
        if failed:
            raise typer.Exit(1)

    @app.command("explain")
    def explain_(
        field: Annotated[
            str, typer.Argument(help="KIND[.field.path], e.g. application.spec.overrides")
        ],
    ) -> None:
        """Describe a kind's fields: type, description, default, allowed values, children."""
        kind, *path = field.split(".")
        client = ApiClient()
        try:
            info = Kinds(client).find(kind)
            schema = client.json("GET", info["schema"])
            typer.echo(explain(schema, path), nl=False)
        except ApiError as exc:
            raise fail(exc) from None
        except NotFoundError as exc:
            typer.secho(f"error: {exc.message}", err=True, fg="red")
            raise typer.Exit(1) from None

    @app.command("get")
    def get(
        kind: Annotated[str, typer.Argument(help="clusters, nodepools, tenants, projects, …")],
        name: Annotated[str | None, typer.Argument()] = None,
        tenant: TenantOption = None,
        output: OutputOption = "table",
        selector: Annotated[str | None, typer.Option("--selector", "-l")] = None,
    ) -> None:
        """List resources of a kind, or show one."""
        client = ApiClient()
        try:
            info = Kinds(client).find(kind)
            base = (
                f"/api/v1/{info['plural']}"
                if not name and not tenant
                else collection_path(info, tenant)
            )
            if name:
                items = [client.json("GET", f"{base}/{name}")]
            else:
                items, token = [], None
                while True:
                    params = {"limit": 500, "labelSelector": selector, "continue": token}
                    page = client.json("GET", base, params={k: v for k, v in params.items() if v})
                    items += page["items"]
                    token = page["metadata"].get("continue")
                    if not token:
                        break
        except ApiError as exc:
            raise fail(exc) from None
        if output in ("yaml", "json"):
            _emit(items[0] if name else {"kind": "List", "items": items}, output)
        elif output == "name":
            for item in items:
                typer.echo(f"{info['kind'].lower()}/{item['metadata']['name']}")
        elif not items:
            typer.echo(f"No {info['plural']} found.", err=True)
        else:
            print_table(info, items, wide=output == "wide")

    @app.command("describe")
    def describe(kind: str, name: str, tenant: TenantOption = None) -> None:
        """Show one resource with its spec, status and conditions."""
        client = ApiClient()
        try:
            info = Kinds(client).find(kind)
            obj = client.json("GET", f"{collection_path(info, tenant)}/{name}")
        except ApiError as exc:
            raise fail(exc) from None
        meta = obj["metadata"]
        typer.echo(f"Name:         {meta['name']}")
        if "tenant" in meta:
            typer.echo(f"Tenant:       {meta['tenant']}")
        typer.echo(f"Kind:         {obj['kind']}")
        typer.echo(f"Labels:       {_lookup(obj, 'metadata.labels') or '<none>'}")
        typer.echo(f"Created:      {meta['creationTimestamp']}")
        typer.echo(
            f"Generation:   {meta['generation']} (observed "
            f"{obj['status'].get('observedGeneration', '-')})"
        )
        typer.echo("Spec:")
        typer.echo(
            "  " + yaml.safe_dump(obj["spec"], sort_keys=False).rstrip().replace("\n", "\n  ")
        )
        status = {k: v for k, v in obj["status"].items() if k != "conditions"}
        if status:
            typer.echo("Status:")
            typer.echo(
                "  " + yaml.safe_dump(status, sort_keys=False).rstrip().replace("\n", "\n  ")
            )
        describer = DESCRIBERS.get(obj["kind"])
        for line in describer(obj) if describer else []:
            typer.echo(line)
        conditions = obj["status"].get("conditions", [])
        typer.echo("Conditions:" + ("" if conditions else " <none>"))
        for c in conditions:
            typer.echo(f"  {c['type']:<10} {c['status']:<7} {c['reason']:<20} {c['message']}")

    @app.command("delete")
    def delete(
        kind: str,
        name: str,
        tenant: TenantOption = None,
        yes: Annotated[
            bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")
        ] = False,
        delete_volumes: Annotated[
            bool,
            typer.Option(
                "--delete-volumes", help="Also delete an application's volumes (kept otherwise)"
            ),
        ] = False,
    ) -> None:
        """Delete a resource (asks first: a project's namespaces go with it)."""
        client = ApiClient()
        try:
            info = Kinds(client).find(kind)
            path = f"{collection_path(info, tenant)}/{name}"
            if not yes:
                typer.confirm(
                    f"Delete {info['kind']} {name} and what it owns in the clusters?", abort=True
                )
            params: dict[str, str] = {"confirm": name}
            if delete_volumes:
                params["deleteVolumes"] = "true"
            answer = client.json("DELETE", path, params=params)
        except ApiError as exc:
            raise fail(exc) from None
        typer.echo(f"{info['kind'].lower()}/{name} deleted")
        deletion = (
            (answer.get("status") or {}).get("deletion") if isinstance(answer, dict) else None
        )
        if deletion:
            typer.echo(deletion["message"])
