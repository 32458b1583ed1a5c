"""REST routes for every kind, generated from its `Kind`: list, get, create, apply, delete.

Platform kinds live at /api/v1/{plural}; tenant kinds at /api/v1/tenants/{tenant}/{plural}.
POST /api/v1/apply takes any manifest, as `wharf apply -f` sends it.

Bodies are read as plain JSON and validated by the service (authorize first, then validate),
while the OpenAPI document names each kind's own schema (`resources.openapi`).
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from wharf.core.errors import InvalidError, NotFoundError
from wharf.core.jsoncodec import JSONAnswer
from wharf.core.resources import Kind, kind_schema, list_model, resource_model, schema_url
from wharf.identity.api import current_principal
from wharf.identity.model import Principal
from wharf.resources.openapi import kind_body, kinds_body, response_of
from wharf.resources.service import KindRules, ResourceService

Caller = Annotated[Principal, Depends(current_principal)]


async def manifest_body(request: Request) -> dict[str, Any]:
    """The request's manifest as JSON data; its shape is checked by the service, after
    authorization, so that a 422 never tells a caller more than a 403 would."""
    raw = await request.body()
    try:
        body = json.loads(raw, parse_constant=_not_a_number)
    except ValueError:
        raise InvalidError("body: not valid JSON", field="body") from None
    except RecursionError:  # deeper than the parser goes: no manifest is shaped like that
        raise InvalidError("body: nested too deeply", field="body") from None
    if not isinstance(body, dict):
        raise InvalidError("body: a manifest is a JSON object", field="body")
    if b"\\u" in raw:  # only an escape can make half of a UTF-16 pair, which no text holds
        try:
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise InvalidError(
                "body: holds an unpaired UTF-16 surrogate escape (\\ud800 to \\udfff), not text",
                field="body",
            ) from None
    return body


def _not_a_number(constant: str) -> Any:
    # The standard library takes NaN and Infinity, which JSON has not (nor would a database
    # keep them as numbers).
    raise InvalidError(f"body: {constant} is not a JSON number", field="body")


ManifestBody = Annotated[dict[str, Any], Depends(manifest_body)]


class KindInfo(BaseModel):
    kind: str = Field(description="The kind's name, as manifests spell it")
    plural: str = Field(description="Its name in URLs")
    scope: str = Field(description="platform, or tenant for kinds that live inside a tenant")
    shortNames: list[str] = Field(description="Other names `wharf get` takes")
    columns: list[list[str]] = Field(description="[header, field path] pairs `wharf get` shows")
    schema_: str = Field(alias="schema", description="Where its JSON Schema is served")


class KindList(BaseModel):
    items: list[KindInfo]


class KindSchema(BaseModel):
    """A kind's JSON Schema (draft 2020-12), the kind's own model: apiVersion, kind,
    metadata, spec, status, with every field's type, description, default and limits."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    schema_: str = Field(alias="$schema", description="The JSON Schema dialect")
    id_: str = Field(alias="$id", description="Where it is served")
    title: str = Field(description="The kind")
    properties: dict[str, Any] = Field(description="The object's fields, as JSON Schema")
    defs: dict[str, Any] = Field(alias="$defs", description="The schemas the fields refer to")


def resource_service(request: Request) -> ResourceService:
    service: ResourceService = request.app.state.resources
    return service


Service = Annotated[ResourceService, Depends(resource_service)]


def _routes(router: APIRouter, rules: KindRules[Any]) -> None:
    kind = rules.kind
    base = f"/{kind.plural}" if kind.scope == "platform" else f"/tenants/{{tenant}}/{kind.plural}"
    tags: list[str | Enum] = [kind.name]
    one, page = resource_model(kind), list_model(kind)

    def list_(
        p: Caller,
        service: Service,
        tenant: str = "",
        labelSelector: Annotated[str | None, Query(description="k=v[,k=v]")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        continue_: Annotated[str | None, Query(alias="continue")] = None,
    ) -> JSONAnswer:
        # Encoded straight to JSON: the objects are plain JSON data already, and FastAPI's
        # generic encoder walking every field of a 500-item page is the slowest part of a list.
        return JSONAnswer(
            service.list_(p, kind.name, tenant or None, labelSelector, limit, continue_)
        )

    def get(p: Caller, service: Service, name: str, tenant: str = "") -> JSONAnswer:
        return JSONAnswer(service.get(p, kind.name, tenant, name))

    def create(p: Caller, service: Service, body: ManifestBody, tenant: str = "") -> JSONAnswer:
        obj, _ = service.apply(p, body, tenant or None, kind=kind.name, create_only=True)
        return JSONAnswer(obj, status_code=201)

    def apply(
        p: Caller,
        service: Service,
        name: str,
        body: ManifestBody,
        tenant: str = "",
    ) -> JSONAnswer:
        obj, created = service.apply(p, body, tenant or None, kind=kind.name, name=name)
        return JSONAnswer(obj, status_code=201 if created else 200)

    def delete(
        p: Caller,
        service: Service,
        name: str,
        tenant: str = "",
        confirm: Annotated[str | None, Query(description="the name again, to confirm")] = None,
        deleteVolumes: Annotated[
            bool,
            Query(
                description="Also delete its volumes (applications); they are kept otherwise, "
                "and the answer's status.deletion says so"
            ),
        ] = False,
    ) -> JSONAnswer:
        return JSONAnswer(service.delete(p, kind.name, tenant, name, confirm, deleteVolumes))

    listed = response_of(page, f"A page of {kind.plural}")
    router.add_api_route(
        base,
        list_,
        methods=["GET"],
        tags=tags,
        summary=f"List {kind.plural}",
        response_model=None,
        responses=listed,
    )
    if kind.scope == "tenant":
        router.add_api_route(
            f"/{kind.plural}",
            list_,
            methods=["GET"],
            tags=tags,
            summary=f"List {kind.plural} of every tenant the caller may see",
            response_model=None,
            responses=listed,
        )
    router.add_api_route(
        base,
        create,
        methods=["POST"],
        tags=tags,
        status_code=201,
        summary=f"Create a {kind.name}",
        response_model=None,
        responses=response_of(one, "Created", 201),
        openapi_extra=kind_body(kind),
    )
    router.add_api_route(
        f"{base}/{{name}}",
        get,
        methods=["GET"],
        tags=tags,
        summary=f"Read a {kind.name}",
        response_model=None,
        responses=response_of(one, f"The {kind.name}"),
    )
    router.add_api_route(
        f"{base}/{{name}}",
        apply,
        methods=["PUT"],
        tags=tags,
        summary=f"Create or update a {kind.name} (apply)",
        response_model=None,
        responses={
            **response_of(one, "Updated (or unchanged)"),
            **response_of(one, "Created", 201),
        },
        openapi_extra=kind_body(kind),
    )
    router.add_api_route(
        f"{base}/{{name}}",
        delete,
        methods=["DELETE"],
        tags=tags,
        summary=f"Delete a {kind.name} (needs ?confirm=<name>)",
        response_model=None,
        responses=response_of(one, "Deleted: the object as it was"),
    )


def resource_router(rules: list[KindRules[Any]]) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    for r in rules:
        _routes(router, r)
    kinds_ = [r.kind for r in rules]

    @router.post(
        "/apply",
        tags=["resources"],
        summary="Create or update any kind from a manifest",
        response_model=None,
        responses=kinds_body(kinds_)[1],
        openapi_extra=kinds_body(kinds_)[0],
    )
    def apply_any(p: Caller, service: Service, body: ManifestBody) -> JSONAnswer:
        obj, created = service.apply(p, body)
        return JSONAnswer(obj, status_code=201 if created else 200)

    @router.get(
        "/schemas/{kind}.json",
        tags=["resources"],
        summary="A kind's JSON Schema, for editors (YAML validation, completion) and tools",
        response_model=None,
        responses=response_of(KindSchema, "The kind's JSON Schema"),
    )
    def kind_schema_(
        kind: Annotated[str, Path(description="The kind, lowercase: tenant, application, …")],
    ) -> JSONAnswer:
        found = next((k for k in kinds_ if kind in (k.name.lower(), k.plural)), None)
        if found is None:
            known = ", ".join(k.name.lower() for k in kinds_)
            raise NotFoundError(f"no kind {kind!r}: known kinds are {known}", field="kind")
        return JSONAnswer(kind_schema(found))

    @router.get("/kinds", tags=["resources"], summary="The kinds this server knows")
    def kinds(_p: Caller) -> KindList:
        return KindList(items=[_kind_info(k) for k in kinds_])

    return router


def _kind_info(kind: Kind[Any]) -> KindInfo:
    return KindInfo(
        kind=kind.name,
        plural=kind.plural,
        scope=kind.scope,
        shortNames=list(kind.short_names),
        columns=[list(c) for c in kind.columns],
        schema=schema_url(kind),
    )
