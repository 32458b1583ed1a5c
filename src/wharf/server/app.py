"""The FastAPI application: migrations on start, health and readiness, metrics, access logs."""

from __future__ import annotations

import datetime as dt
import gc
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
)
from pydantic import BaseModel, Field
from sqlalchemy import DateTime, Integer, String, column, insert, select, table
from starlette.concurrency import run_in_threadpool

import wharf
from wharf import console
from wharf.alerts import api as alerts_api
from wharf.apps import api as apps_api
from wharf.audit import api as audit_api
from wharf.core.config import Settings
from wharf.core.errors import InvalidError, WharfError
from wharf.core.logging import get_logger
from wharf.identity import api as identity_api
from wharf.logs import api as logs_api
from wharf.logs.service import HistoryLogs, LiveLogs, LogStoreClient
from wharf.monitoring import api as monitoring_api
from wharf.monitoring.service import FeedCollector
from wharf.network import api as network_api
from wharf.registry import api as registry_api
from wharf.releases import api as releases_api
from wharf.resources import openapi
from wharf.resources.api import resource_router
from wharf.scaling import api as scaling_api
from wharf.server.limits import RefusedInput, RequestBounds
from wharf.server.metrics import Metrics, RequestMetrics, authorize_scrape
from wharf.server.platform import Platform
from wharf.server.routing import add_routes
from wharf.store import Database, migrate, schema_head
from wharf.tenancy import api as tenancy_api

log = get_logger("wharf.server")

_installation = table(
    "installation",
    column("id", Integer),
    column("installed_at", DateTime(timezone=True)),
    column("installed_version", String),
)


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str] = Field(description="Each check (database, schema): ok, or why not")


class Version(BaseModel):
    version: str = Field(description="Wharf's version")
    database: str = Field(description="sqlite or postgresql")
    schema_: str | None = Field(alias="schema", description="The database schema revision")


def _record_installation(db: Database) -> None:
    with db.exclusive() as session:
        if session.execute(select(_installation.c.id)).first() is None:
            session.execute(
                insert(_installation).values(
                    installed_at=dt.datetime.now(dt.UTC), installed_version=wharf.__version__
                )
            )


def _announce_admin_password(password: str, settings: Settings) -> None:
    """Show the generated password once, on the terminal, never in the logs: where there is
    no terminal (a container's output is its log), it goes to a file only its owner reads."""
    advice = "log in as admin and change it: wharf user passwd admin"
    if sys.stderr.isatty():
        sys.stderr.write(f"\nThe first user is admin; its password: {password}\n({advice})\n\n")
        log.warning(
            "created the first user: admin (platform-admin); password shown on the terminal"
        )
        return
    path = settings.key_file().with_name("initial-admin-password")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    log.warning(
        "created the first user: admin (platform-admin); its password is in a file",
        password_file=str(path),
        advice=advice + ", then delete the file",
    )


def create_app(settings: Settings) -> FastAPI:
    db = Database(settings.database_url)
    platform = Platform(settings, db)
    metrics = Metrics(
        platform.reconciles_per_cluster,
        settings.replica,
        platform.leases.names,
        platform.cluster_owners,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        revision = migrate(db)
        _record_installation(db)
        log.info("database ready", dialect=db.dialect, schema=revision)
        password = platform.bootstrap()
        if password:
            _announce_admin_password(password, settings)
        platform.start()
        # What start-up made lives as long as the process: keep it out of the collector's
        # full passes, which otherwise cost ~100 ms every few dozen page views (bench/console.py).
        gc.freeze()
        yield
        await platform.stop()
        db.dispose()

    app = FastAPI(
        title="Wharf",
        version=wharf.__version__,
        description="Enterprise container-cloud PaaS on Kubernetes",
        lifespan=lifespan,
    )
    app.state.db = db
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.platform = platform
    app.state.user_listeners = [platform.user_changed]
    app.state.resources = platform.resources
    app.state.alerting = platform.alerting
    app.state.cluster_rules = platform.cluster_rules
    app.state.connections = platform.connections
    app.state.login_throttle = platform.login_throttle
    app.state.live_logs = LiveLogs(platform.resources, platform.cluster_rules, platform.connections)
    app.state.history_logs = HistoryLogs(
        app.state.live_logs, LogStoreClient(settings.log_store_url), platform.log_store_retention
    )

    @app.exception_handler(WharfError)
    async def wharf_error(_request: Request, exc: WharfError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @app.exception_handler(RefusedInput)
    async def refused_input(_request: Request, exc: RefusedInput) -> JSONResponse:
        return JSONResponse(exc.error.body(), status_code=exc.error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"field": ".".join(str(x) for x in e["loc"]), "message": e["msg"]} for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        error = InvalidError(
            f"{first['field']}: {first['message']}", field=first["field"], errors=errors
        )
        if _request.url.path.startswith("/console/"):
            return console.error_page(_request, None, error)  # a page, not JSON, in a browser
        return JSONResponse(error.body(), status_code=error.status)

    # The probes first: a route is found by trying each in turn (about 6 µs apiece), and
    # /healthz behind the 200 others cost more to find than to answer.
    @app.get("/healthz", tags=["health"], summary="Liveness: the process serves requests")
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Readiness: database reachable, schema current",
        response_model=None,
        responses={
            200: {"model": Readiness, "description": "Ready"},
            503: {"model": Readiness, "description": "Not ready: `checks` says why"},
        },
    )
    def readyz() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            db.ping()
            checks["database"] = "ok"
            current, head = db.current_revision(), schema_head()
            checks["schema"] = "ok" if current == head else f"at {current}, expected {head}"
        except Exception as exc:  # readiness reports, it does not crash
            checks["database"] = f"unreachable: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=False)
    def prometheus_metrics(request: Request) -> Response:
        authorize_scrape(request, settings)
        for controller in platform.controllers():
            metrics.queue_depth.labels(controller.name).set(len(controller.queue))
            metrics.reconciles.labels(controller.name).set(controller.reconciles)
        metrics.cluster_writes.set(platform.placement.writes)
        metrics.changes_heard.set(platform.changes.heard)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/metrics/workloads",
        tags=["health"],
        summary="Pods' and applications' series for Prometheus (docs/observability.md)",
        include_in_schema=False,
    )
    async def workload_metrics(request: Request) -> Response:
        # Every tenant's series: for the platform's scraper, guarded as /metrics is.
        await run_in_threadpool(authorize_scrape, request, settings)
        registry = CollectorRegistry()
        registry.register(FeedCollector(await platform.workload_feed.collect()))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    add_routes(
        app,
        identity_api.router,
        audit_api.router,
        tenancy_api.router,
        apps_api.router,
        registry_api.router,
        releases_api.router,
        network_api.router,
        scaling_api.router,
        alerts_api.router,
        monitoring_api.router,
        logs_api.router,
        *console.ROUTERS,
    )
    console.install(app, settings.assets_dir)
    add_routes(app, resource_router(platform.rules))
    openapi.install(app)

    app.add_middleware(RequestMetrics, metrics=metrics, log=log)
    # Last added, so outermost: no middleware or route reads more than the bound.
    app.add_middleware(RequestBounds, limit=settings.max_body_bytes)

    @app.get("/api/v1/version", tags=["platform"], summary="Wharf's version and its database")
    def version() -> Version:
        return Version(version=wharf.__version__, database=db.dialect, schema=schema_head())

    return app
