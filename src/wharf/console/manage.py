"""Console pages for everything else the API offers, through the one generic machinery: any
object as YAML to edit and apply, new objects from YAML, deletion with its name typed to
confirm; and local users with their platform roles."""

from __future__ import annotations

from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from wharf.core import documents
from wharf.core.errors import ForbiddenError, InvalidError, WharfError
from wharf.identity import service as identity
from wharf.identity.api import database
from wharf.resources.service import edit_mark

from .web import Viewer, page, render, resources, see_other

router = APIRouter(prefix="/console", include_in_schema=False)
PLATFORM = "-"  # the tenant segment of a platform-scoped object's URL
# Server-set metadata the editor leaves out. resourceVersion too: every status write moves
# it, so an edit pinned to it would be refused for a controller's write; the form carries
# an edit mark instead (the spec's generation, a digest of labels and annotations), which
# moves only with what can be edited (as kubectl edit fails only on what was edited).
STATUS_FIELDS = ("uid", "generation", "resourceVersion", "creationTimestamp", "updateTimestamp")


def _editable(obj: dict[str, Any]) -> str:
    """The object as a manifest to edit: no status or server-set metadata."""
    metadata = {k: v for k, v in obj["metadata"].items() if k not in STATUS_FIELDS}
    manifest = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": metadata,
        "spec": obj["spec"],
    }
    return yaml.safe_dump(manifest, sort_keys=False)


def _parse(text: str) -> list[dict[str, Any]]:
    try:
        docs = [d for d in documents.load_all(text) if d]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if isinstance(exc, documents.DocumentTooLarge):
            where = f": {exc}"
        raise InvalidError(f"yaml: not valid YAML{where}", field="yaml") from None
    if not docs:
        raise InvalidError("yaml: no object given", field="yaml")
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise InvalidError(f"yaml: document {i + 1} is not a mapping", field="yaml")
    return docs


def object_url(obj: dict[str, Any]) -> str:
    """The console page of an object, or its YAML page for kinds without one of their own."""
    kind, meta = obj["kind"], obj["metadata"]
    name, tenant = meta["name"], meta.get("tenant", "")
    pages = {
        "Cluster": f"/console/clusters/{name}",
        "Tenant": f"/console/tenants/{name}",
        "Project": f"/console/tenants/{tenant}/projects/{name}",
        "Application": f"/console/tenants/{tenant}/applications/{name}",
    }
    return pages.get(kind, f"/console/edit/{kind}/{tenant or PLATFORM}/{name}")


@router.get("/edit/{kind}/{tenant}/{name}", response_class=HTMLResponse)
def edit_page(request: Request, kind: str, tenant: str, name: str) -> Response:
    def build(who: Viewer) -> Response:
        obj = resources(request).get(who.principal, kind, _tenant(tenant), name)
        text = _editable(obj)
        meta = obj["metadata"]
        seen = edit_mark(meta["generation"], meta["labels"], meta["annotations"])
        return render(request, "edit.html", who, obj=obj, text=text, seen=seen, error=None)

    return page(request, build)


@router.post("/edit/{kind}/{tenant}/{name}", response_class=HTMLResponse)
def edit(
    request: Request,
    kind: str,
    tenant: str,
    name: str,
    text: Annotated[str, Form(alias="yaml")],
    seen: Annotated[str | None, Form(max_length=64)] = None,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    def build(who: Viewer) -> Response:
        service = resources(request)
        obj = service.get(who.principal, kind, _tenant(tenant), name)
        try:
            docs = _parse(text)
            if len(docs) != 1:
                raise InvalidError("yaml: edit one object here", field="yaml")
            saved, _ = service.apply(
                who.principal,
                docs[0],
                _tenant(tenant) or None,
                kind,
                name,
                seen=seen,
            )
        except WharfError as exc:
            if exc.status in (401, 403, 404):
                raise
            # The form keeps the mark its text was made from (none if it came without
            # one): a refused edit sent again is refused again if the object moved on.
            return render(
                request,
                "edit.html",
                who,
                status_code=exc.status,
                obj=obj,
                text=text,
                seen=seen,
                error=exc,
            )
        return see_other(object_url(saved))

    return page(request, build, csrf)


@router.get("/apply", response_class=HTMLResponse)
def apply_page(request: Request, kind: str = "") -> Response:
    def build(who: Viewer) -> Response:
        return render(request, "apply.html", who, text=EXAMPLES.get(kind, ""), error=None, done=[])

    return page(request, build)


@router.post("/apply", response_class=HTMLResponse)
def apply(
    request: Request,
    text: Annotated[str, Form(alias="yaml")],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    def build(who: Viewer) -> Response:
        service = resources(request)
        done: list[dict[str, Any]] = []
        try:
            for doc in _parse(text):
                obj, created = service.apply(who.principal, doc)
                done.append({"obj": obj, "created": created, "url": object_url(obj)})
        except WharfError as exc:
            # Earlier documents of the same text were applied; the page says which.
            return render(
                request, "apply.html", who, status_code=exc.status, text=text, error=exc, done=done
            )
        return render(request, "apply.html", who, text=text, error=None, done=done)

    return page(request, build, csrf)


@router.post("/delete/{kind}/{tenant}/{name}")
def delete(
    request: Request,
    kind: str,
    tenant: str,
    name: str,
    confirm: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    def build(who: Viewer) -> Response:
        resources(request).delete(who.principal, kind, _tenant(tenant), name, confirm)
        return see_other("/console/")

    return page(request, build, csrf)


def _tenant(segment: str) -> str:
    return "" if segment == PLATFORM else segment


EXAMPLES = {
    "Tenant": """apiVersion: wharf.io/v1
kind: Tenant
metadata:
  name: my-tenant
spec:
  displayName: A department
  admins: []
  quota: {cpu: "8", memory: 16Gi}
  clusters: []
""",
    "Cluster": """apiVersion: wharf.io/v1
kind: Cluster
metadata:
  name: my-cluster
spec:
  kubeconfig: |
    # paste the cluster's kubeconfig here; it is sealed at rest and never shown again
""",
}


# -- users ---------------------------------------------------------------------------------------
def _users(
    request: Request,
    who: Viewer,
    error: WharfError | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    with database(request).reader() as session:
        roles = identity.roles_by_user(session)
    status = error.status if error else 200
    return render(
        request, "users.html", who, status_code=status, roles=roles, error=error, form=form or {}
    )


@router.get("/users", response_class=HTMLResponse)
def users_page(request: Request) -> Response:
    def build(who: Viewer) -> Response:
        if not who.platform_reader:
            raise ForbiddenError(f"{who.user} may not see the platform's users")
        return _users(request, who)

    return page(request, build)


@router.post("/users", response_class=HTMLResponse)
def create_user(
    request: Request,
    name: Annotated[str, Form()],
    password: Annotated[str, Form()],
    role: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    def build(who: Viewer) -> Response:
        db = database(request)
        identity.require_platform_admin(db, who.principal, "create", name)
        try:
            with db.session() as session:
                identity.add_user(session, who.principal, name.strip(), password)
                if role:
                    identity.bind_platform_role(session, who.principal, name.strip(), role)
        except WharfError as exc:
            if exc.status in (401, 403, 404):
                raise
            return _users(request, who, exc, {"name": name})
        return see_other("/console/users")

    return page(request, build, csrf)
