"""REST routes for every kind, generated from its `Kind`: list, get, create, apply, delete.

Platform kinds live at /api/v1/{plural}; tenant kinds at /api/v1/tenants/{tenant}/{plural}.
POST /api/v1/apply takes any manifest, as `wharf apply -f` sends it.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from wharf.identity.api import current_principal
from wharf.identity.model import Principal
from wharf.resources.service import KindRules, ResourceService

Caller = Annotated[Principal, Depends(current_principal)]
ManifestBody = Annotated[
    dict[str, Any], Body(description="A whole manifest: apiVersion, kind, metadata, spec")
]


def resource_service(request: Request) -> ResourceService:
    service: ResourceService = request.app.state.resources
    return service


Service = Annotated[ResourceService, Depends(resource_service)]


def _routes(router: APIRouter, rules: KindRules) -> None:
    kind = rules.kind
    base = f"/{kind.plural}" if kind.scope == "platform" else f"/tenants/{{tenant}}/{kind.plural}"
    tags: list[str | Enum] = [kind.name]

    def list_(
        p: Caller,
        service: Service,
        tenant: str = "",
        labelSelector: Annotated[str | None, Query(description="k=v[,k=v]")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        continue_: Annotated[str | None, Query(alias="continue")] = None,
    ) -> JSONResponse:
        # Encoded straight to JSON: the objects are plain JSON data already, and FastAPI's
        # generic encoder walking every field of a 500-item page is the slowest part of a list.
        return JSONResponse(
            service.list_(p, kind.name, tenant or None, labelSelector, limit, continue_)
        )

    def get(p: Caller, service: Service, name: str, tenant: str = "") -> JSONResponse:
        return JSONResponse(service.get(p, kind.name, tenant, name))

    def create(
        p: Caller, service: Service, body: ManifestBody, response: Response, tenant: str = ""
    ) -> dict[str, Any]:
        obj, _ = service.apply(p, body, tenant or None, kind=kind.name, create_only=True)
        response.status_code = 201
        return obj

    def apply(
        p: Caller,
        service: Service,
        name: str,
        body: ManifestBody,
        response: Response,
        tenant: str = "",
    ) -> dict[str, Any]:
        obj, created = service.apply(p, body, tenant or None, kind=kind.name, name=name)
        response.status_code = 201 if created else 200
        return obj

    def delete(
        p: Caller,
        service: Service,
        name: str,
        tenant: str = "",
        confirm: Annotated[str | None, Query(description="the name again, to confirm")] = None,
    ) -> dict[str, Any]:
        return service.delete(p, kind.name, tenant, name, confirm)

    router.add_api_route(base, list_, methods=["GET"], tags=tags, summary=f"List {kind.plural}")
    if kind.scope == "tenant":
        router.add_api_route(
            f"/{kind.plural}",
            list_,
            methods=["GET"],
            tags=tags,
            summary=f"List {kind.plural} of every tenant the caller may see",
        )
    router.add_api_route(
        base, create, methods=["POST"], tags=tags, status_code=201, summary=f"Create a {kind.name}"
    )
    router.add_api_route(
        f"{base}/{{name}}", get, methods=["GET"], tags=tags, summary=f"Read a {kind.name}"
    )
    router.add_api_route(
        f"{base}/{{name}}",
        apply,
        methods=["PUT"],
        tags=tags,
        summary=f"Create or update a {kind.name} (apply)",
    )
    router.add_api_route(
        f"{base}/{{name}}",
        delete,
        methods=["DELETE"],
        tags=tags,
        summary=f"Delete a {kind.name} (needs ?confirm=<name>)",
    )


def resource_router(rules: list[KindRules]) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    for r in rules:
        _routes(router, r)

    @router.post("/apply", tags=["resources"], summary="Create or update any kind from a manifest")
    def apply_any(
        p: Caller, service: Service, body: ManifestBody, response: Response
    ) -> dict[str, Any]:
        obj, created = service.apply(p, body)
        response.status_code = 201 if created else 200
        return obj

    @router.get("/kinds", tags=["resources"], summary="The kinds this server knows")
    def kinds(_p: Caller) -> dict[str, Any]:
        return {
            "items": [
                {
                    "kind": r.kind.name,
                    "plural": r.kind.plural,
                    "scope": r.kind.scope,
                    "shortNames": list(r.kind.short_names),
                    "columns": [list(c) for c in r.kind.columns],
                }
                for r in rules
            ]
        }

    return router
