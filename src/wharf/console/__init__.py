"""The web console: server-rendered pages (Jinja2 + htmx), live status over server-sent events."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from . import account, apps, charts, incidents, manage, network, releases, views
from .web import error_page

__all__ = ["ROUTERS", "error_page", "install"]

# The pages, added by the server as its own routes (server/routing.py says why).
ROUTERS = (
    views.router,
    apps.router,
    releases.router,
    charts.router,
    incidents.router,
    network.router,
    account.router,
    manage.router,
)

STATIC = Path(__file__).parent / "static"


def to_the_console() -> RedirectResponse:
    """People type the bare address: it is the console they came for (the API is at /docs)."""
    return RedirectResponse("/console/")


def install(app: FastAPI, assets_dir: Path) -> None:
    """Add the console's front door, its own stylesheet and the npm-installed htmx files."""
    app.add_api_route("/", to_the_console, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/static/console", StaticFiles(directory=STATIC), name="console")
    for package, mount in (("htmx.org", "htmx"), ("htmx-ext-sse", "htmx-ext-sse")):
        dist = assets_dir / package / "dist"
        if dist.is_dir():  # pages work without them; they only make them livelier
            app.mount(f"/static/{mount}", StaticFiles(directory=dist), name=mount)
