"""The console's network and storage page of a tenant: node ports, domains, certificates,
routes, traffic rules and volumes — read through the same services as the REST API, so a
caller sees what the API would show it (a project member: its projects)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from wharf.apps.model import ApplicationSpec
from wharf.apps.service import rendered_for
from wharf.core.errors import WharfError
from wharf.core.quantity import format_quantity
from wharf.identity.api import database
from wharf.network.model import volumes
from wharf.network.service import node_port_view, reachability, tenant_domains

from .web import Viewer, page, render, resources

router = APIRouter(prefix="/console", include_in_schema=False)
ALL = 500  # one page of each list is enough for a tenant's network page
RENDERED_BY = ("project", "environment", "template", "values")


def _endpoint(end: dict[str, Any]) -> str:
    if end.get("application"):
        return f"application {end['application']}"
    if end.get("project"):
        return f"project {end['project']}"
    if end.get("cidr"):
        return f"CIDR {end['cidr']}"
    return "DNS"


def _traffic(policies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Who may talk to whom: one row per rule, under each project's default."""
    rows = []
    for policy in policies:
        for rule in policy["spec"].get("allow", []):
            rows.append(
                {
                    "project": policy["metadata"]["name"],
                    "from": _endpoint(rule["from"]),
                    "to": _endpoint(rule["to"]),
                    "ports": ", ".join(str(p) for p in rule.get("ports", [])) or "any",
                }
            )
    return rows


def _volumes(session: Any, apps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for app in apps:
        try:
            # Only what rendering needs: the presented spec masks secrets.
            wanted = {k: app["spec"][k] for k in RENDERED_BY if k in app["spec"]}
            objects = rendered_for(session, ApplicationSpec.model_validate(wanted))
        except (WharfError, ValidationError):
            continue  # a template version that went away: nothing to show
        for volume in volumes(objects):
            rows.append(
                {
                    "project": app["spec"]["project"],
                    "application": app["metadata"]["name"],
                    "where": volume.where,
                    "class": volume.storage_class or "(none)",
                    "size": format_quantity(volume.size, "requests.storage"),
                    "count": volume.count,
                }
            )
    return rows


def _claims(apps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each application's claims as its clusters hold them (capacity, phase): from the
    status the delivery controller reads from every cluster."""
    return [
        {
            "project": app["spec"]["project"],
            "application": app["metadata"]["name"],
            "cluster": cluster,
            **claim,
        }
        for app in apps
        for cluster, found in sorted(((app.get("status") or {}).get("clusters") or {}).items())
        for claim in found.get("volumes", [])
    ]


REACH_FIELDS = ("env", "from", "to", "port")


def _reach(session: Any, p: Any, tenant: str, asked: dict[str, str]) -> dict[str, Any] | None:
    """The answer to "may A reach B on port P?" when the form was sent (the same query as
    GET /api/v1/tenants/{t}/reachability); a refusal is shown with its field."""
    if not any(asked.values()):
        return None
    if not asked["port"].isdigit():
        return {"error": {"message": "port: give a number (1-65535)", "field": "port"}}
    try:
        port = int(asked["port"])
        return reachability(
            session, p, tenant, asked["env"] or "dev", asked["from"], asked["to"], port
        )
    except WharfError as exc:
        return {"error": {"message": exc.message, "field": exc.field}}


@router.get("/tenants/{tenant}/network", response_class=HTMLResponse)
def network(request: Request, tenant: str) -> Response:
    asked = {f: request.query_params.get(f, "")[:200] for f in REACH_FIELDS}

    def build(who: Viewer) -> Response:
        p = who.principal
        service = resources(request)
        apps = service.list_(p, "Application", tenant, limit=ALL)["items"]
        policies = service.list_(p, "TrafficPolicy", tenant, limit=ALL)["items"]
        certificates = service.list_(p, "Certificate", tenant, limit=ALL)["items"]
        with database(request).reader() as session:
            ports = node_port_view(session, p, tenant)
            domains = tenant_domains(session, tenant)
            stored_volumes = _volumes(session, apps)
            reach = _reach(session, p, tenant, asked)
        routes = [
            {"project": a["spec"]["project"], "application": a["metadata"]["name"], **r}
            for a in apps
            for r in a["spec"].get("routes", [])
        ]
        return render(
            request,
            "network.html",
            who,
            tenant=tenant,
            ports=ports,
            domains=domains,
            certificates=certificates,
            routes=routes,
            policies=policies,
            traffic=_traffic(policies),
            volumes=stored_volumes,
            claims=_claims(apps),
            asked=asked,
            reach=reach,
        )

    return page(request, build)
