"""The server on both databases: migrations on start, health, readiness, metrics."""

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

import wharf
from wharf.core.config import Settings
from wharf.server import create_app
from wharf.server.routing import add_routes
from wharf.store import schema_head


def test_server_migrates_and_reports_ready(database_url):
    app = create_app(Settings(database_url=database_url))
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"ready": True, "checks": {"database": "ok", "schema": "ok"}}
        version = client.get("/api/v1/version").json()
        assert version["version"] == wharf.__version__
        assert version["database"] == database_url.split(":")[0].split("+")[0]
    engine = create_engine(database_url)
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == schema_head()
        )
        assert conn.execute(text("SELECT count(*) FROM installation")).scalar() == 1
    engine.dispose()


def test_a_restart_keeps_one_installation_record(database_url):
    for _ in range(2):
        with TestClient(create_app(Settings(database_url=database_url))) as client:
            assert client.get("/readyz").status_code == 200
    engine = create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM installation")).scalar() == 1
    engine.dispose()


def test_metrics_count_requests_by_route(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'w.db'}", metrics_token="scrape")
    with TestClient(create_app(settings)) as client:
        for _ in range(3):
            client.get("/healthz")
        client.get("/no/such/page")
        client.get("/api/v1/tenants/acme/projects/shop")  # no token: 401, but a known route
        body = client.get("/metrics", headers={"Authorization": "Bearer scrape"}).text
    assert 'wharf_http_requests_total{method="GET",route="/healthz",status="200"} 3.0' in body
    # The API's routes (inside included routers) by their templates, names left out.
    api = 'route="/api/v1/tenants/{tenant}/projects/{name}",status="401"} 1.0'
    assert f'wharf_http_requests_total{{method="GET",{api}' in body
    assert 'route="unmatched",status="404"' in body
    assert "wharf_http_request_duration_seconds_bucket" in body


def test_readiness_fails_when_the_database_is_unreachable(tmp_path):
    url = "postgresql+psycopg://nobody:nothing@127.0.0.1:1/none"
    app = create_app(Settings(database_url=url))
    # Without the lifespan (which would migrate), readiness must say 503 and why.
    client = TestClient(app)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("unreachable")


def test_openapi_describes_the_health_endpoints(tmp_path):
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'w.db'}"))
    paths = TestClient(app).get("/openapi.json").json()["paths"]
    assert {"/healthz", "/readyz", "/api/v1/version"} <= set(paths)


def test_a_wild_kubeconfig_lifetime_is_a_4xx_not_a_500(tmp_path):
    # Found by a schema-driven run: the token-lifetime check overflowed on a huge ttl.
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'w.db'}",
        secret_key="k",
        admin_password="admin-password-1",
        controllers=False,
    )
    with TestClient(create_app(settings)) as client:
        login = {"username": "admin", "password": "admin-password-1"}
        token = client.post("/api/v1/login", json=login).json()["token"]
        answer = client.post(
            "/api/v1/tenants/t/projects/p/kubeconfig",
            params={"env": "dev", "ttl": -86399999913601},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert 400 <= answer.status_code < 500, answer.text


def test_the_probes_are_found_before_the_api_routes(database_url):
    """A route is found by trying each in turn: /healthz behind the 200 API and console routes
    cost ~1.3 ms of CPU to find (and about 0.01 ms to answer) on every probe."""
    app = create_app(Settings(database_url=database_url))
    paths = [getattr(route, "path", type(route).__name__) for route in app.router.routes]
    first_api = next(i for i, path in enumerate(paths) if path.startswith(("/api/", "/console")))
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert paths.index(probe) < first_api, paths


def test_every_route_is_the_apps_own(database_url):
    """An included router is a branch FastAPI matches route by route, twice, for every request
    that goes past it: half a GET's CPU (bench/api_cost.py). Every API and console route is
    the application's own, and found once."""
    app = create_app(Settings(database_url=database_url))
    kinds = {type(route).__name__ for route in app.router.routes}
    assert kinds <= {"APIRoute", "Route", "Mount"}, kinds
    paths = [
        (route.path, sorted(route.methods))
        for route in app.router.routes
        if isinstance(route, APIRoute)
    ]
    assert len(paths) > 150
    assert len(set(map(str, paths))) == len(paths)


def test_a_router_whose_routes_would_lose_something_is_refused():
    """Dependencies of a router, or routers included in it, belong to the branch, not to its
    routes: adding its routes alone would drop them silently."""

    def gate() -> None:
        return None

    guarded = APIRouter(prefix="/api/v1", dependencies=[Depends(gate)])
    guarded.add_api_route("/guarded", gate)
    nested = APIRouter()
    nested.include_router(APIRouter())
    for router in (guarded, nested):
        with pytest.raises(ValueError, match="router"):
            add_routes(FastAPI(), router)
