"""What every console page shares: the signed-in caller, the CSRF token, navigation by role,
rendering, and error pages that say what went wrong."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from wharf.core.errors import UnauthenticatedError, WharfError
from wharf.core.quantity import QuantityError, parse_quantity
from wharf.identity import service as identity
from wharf.identity.api import SESSION_COOKIE, authenticate_request
from wharf.identity.model import Principal
from wharf.resources.service import ResourceService
from wharf.tenancy.model import spelled_as

PAGE = 50
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


class SignedOut(Exception):
    """No valid session: the page answers with the login page."""


@dataclass(frozen=True)
class Viewer:
    """The signed-in caller and what the navigation offers them."""

    principal: Principal
    csrf: str

    @property
    def user(self) -> str:
        return self.principal.user

    @property
    def platform_reader(self) -> bool:
        return self.principal.can("read")

    @property
    def tenant_reader(self) -> bool:
        """Platform readers, tenant admins and tenant viewers see the Tenants pages."""
        p = self.principal
        return self.platform_reader or any(
            g.scope == "tenant" and p.can("read", g.tenant) for g in p.grants
        )


def viewer(request: Request, csrf: str | None = None) -> Viewer:
    """The caller of a page; a POST passes its form's csrf field."""
    cookie = request.cookies.get(SESSION_COOKIE, "")
    try:
        p = authenticate_request(request, csrf)
    except UnauthenticatedError:
        raise SignedOut from None
    return Viewer(p, identity.csrf_token(cookie) if cookie else "")


def resources(request: Request) -> ResourceService:
    service: ResourceService = request.app.state.resources
    return service


def listing(
    request: Request, who: Viewer, kind: str, tenant: str | None = None, selector: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a kind as the caller may see it, from the request's `continue` token on;
    the items and the token of the next page."""
    token = request.query_params.get("continue") or None
    found = resources(request).list_(who.principal, kind, tenant, selector, PAGE, token)
    return found["items"], found["metadata"]["continue"]


FILTER_TENANTS = 500  # a tenant filter lists this many


def tenant_names(request: Request, who: Viewer) -> list[str]:
    """The tenants the caller sees, for a tenant filter."""
    found = resources(request).list_(who.principal, "Tenant", limit=FILTER_TENANTS)
    return [t["metadata"]["name"] for t in found["items"]]


def render(
    request: Request, template: str, who: Viewer | None, /, status_code: int = 200, **context: Any
) -> HTMLResponse:
    return templates.TemplateResponse(
        request, template, {"me": who, **context}, status_code=status_code
    )


def error_page(request: Request, who: Viewer | None, exc: WharfError) -> HTMLResponse:
    return render(request, "error.html", who, status_code=exc.status, error=exc)


def login_redirect(request: Request) -> RedirectResponse:
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?{urlencode({'next': back})}", status_code=303)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def page(
    request: Request, build: Callable[[Viewer], Response], csrf: str | None = None
) -> Response:
    """Run a page for the signed-in caller: no session -> login; a refusal -> its error page."""
    try:
        who = viewer(request, csrf)
    except SignedOut:
        return login_redirect(request)
    except WharfError as exc:
        return error_page(request, None, exc)
    try:
        return build(who)
    except WharfError as exc:
        return error_page(request, who, exc)


# -- presentation helpers, used as Jinja filters ---------------------------------------------
def usage(used: str | None, limit: str | None) -> dict[str, Any]:
    """A quota bar: percent used and its colour (green < 70 % <= yellow <= 90 % < red)."""
    try:
        total = parse_quantity(str(limit)) if limit else Fraction(0)
        spent = parse_quantity(str(used)) if used else Fraction(0)
    except QuantityError:
        return {"percent": 0, "level": "unknown", "text": f"{used or 0} of {limit or '?'}"}
    percent = float(spent / total * 100) if total else (100.0 if spent else 0.0)
    level = "ok" if percent < 70 else ("warn" if percent <= 90 else "high")
    return {
        "percent": round(percent, 1),
        "width": min(round(percent), 100),
        "level": level,
        "text": f"{used or 0} of {limit}",
    }


def query(**params: Any) -> str:
    """A query string of the non-empty parameters."""
    return urlencode({k: v for k, v in params.items() if v not in (None, "", False)})


def size(count: int | None) -> str:
    """Bytes for people: 1.2 MiB."""
    value, unit = float(count or 0), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"


templates.env.globals["usage"] = usage
templates.env.globals["size"] = size
templates.env.globals["query"] = query
# Usage comes in the clusters' quota names (requests.cpu); bars show it under the quota's own.
templates.env.globals["spelled_as"] = spelled_as


def sse_event(event: str, html: str) -> str:
    """One server-sent event carrying `html`: a `data:` field per line, split at every line
    break an EventSource knows (a lone CR too), so no text in it (a pod's log line, say)
    can start a field of its own."""
    data = "".join(f"data: {line}\n" for line in html.splitlines())
    return f"event: {event}\n{data}\n"
