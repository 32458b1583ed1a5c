"""Console page latency with 1,000 projects and 10,000 applications, next to an empty endpoint.

Seeds the database directly through the store layer (migrated schema, no HTTP, no controllers):
tenants, projects, applications with revisions and a status, clusters and audit events. Then
starts a real `wharf server` with its controllers off (SQLite by default; --database-url for
PostgreSQL, which must be a fresh, empty database), signs in through the console's login form
and requests each page N times, one after another (or at --rate per second, open loop). Checks
every answer is 200 with the page's heading, and prints p50/p99 per page beside /healthz of the
same server, measured in the same run. Prints figures; asserts nothing about time.

    uv run python bench/console.py [--requests 200] [--rate 0] [--projects 1000]
        [--apps-per-project 10] [--tenants 20] [--events 5000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import html
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from benchkit import PASSWORD, SECRET_KEY, free_port, pct, start_server
from sqlalchemy import func, insert, select

from wharf.apps.model import ApplicationSpec
from wharf.apps.service import CHANGE_CAUSE, seed_catalog
from wharf.core.crypto import SealingKey, SecretBox, place
from wharf.core.resources import set_condition
from wharf.identity import service as identity
from wharf.store import Database, migrate
from wharf.store.audit import AuditEvent, record
from wharf.store.resources import ResourceStore
from wharf.store.tables import memberships, resources, revisions
from wharf.tenancy.model import PROJECT_LABEL, ProjectSpec, TenantSpec

CLUSTERS = ("prod-a", "prod-b", "edge-c")
USERS = [f"dev{i:02d}" for i in range(40)]
# (role in the application's name, catalog template)
ROLES = (
    ("web", "web-service"),
    ("api", "web-service"),
    ("worker", "worker"),
    ("db", "stateful-service"),
    ("cron", "cron-job"),
)
TENANT = "t07"  # the tenant the filtered and detail pages look at


def focus(tenants: int, projects: int) -> int:
    """The index of the project (of TENANT) whose pages are measured."""
    return int(TENANT[1:]) * (projects // tenants) + 25


# -- seeding -----------------------------------------------------------------------------------
def _ts(when: dt.datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def _tenant(t: int, projects: int) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = TenantSpec.model_validate(
        {
            "displayName": f"Business unit {t:02d}",
            "admins": [USERS[t % len(USERS)]],
            "viewers": [USERS[(t + 1) % len(USERS)]],
            "quota": {"cpu": "400", "memory": "800Gi", "pods": "4000"},
            "clusters": list(CLUSTERS),
        }
    ).model_dump(mode="json", by_alias=True, exclude_none=True)
    status = {
        "allocated": {"cpu": str(8 * projects), "memory": f"{16 * projects}Gi"},
        "used": {"cpu": f"{27 * projects // 10}", "memory": "220Gi", "pods": str(27 * projects)},
        "projects": projects,
    }
    return spec, status


def _project(tenant: str, name: str, i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    envs = [
        {"name": "dev", "clusters": [CLUSTERS[i % 3]]},
        {"name": "prod", "clusters": [CLUSTERS[0], CLUSTERS[1]]},
    ]
    spec = ProjectSpec.model_validate(
        {
            "displayName": f"Project {name}",
            "members": [
                {"user": USERS[i % len(USERS)], "role": "project-admin"},
                {"user": USERS[(i + 3) % len(USERS)], "role": "developer"},
                {"user": USERS[(i + 7) % len(USERS)], "role": "viewer"},
            ],
            "quota": {"cpu": "8", "memory": "16Gi", "pods": "80"},
            "environments": envs,
        }
    ).model_dump(mode="json", by_alias=True, exclude_none=True)
    placements = []
    for env in envs:
        for cluster in env["clusters"]:
            placements.append(
                {
                    "environment": env["name"],
                    "cluster": cluster,
                    "namespace": f"{tenant}--{name}-{env['name']}",
                    "state": "Ready",
                    "message": "",
                    "hard": {"requests.cpu": "2", "requests.memory": "4Gi", "pods": "20"},
                    "used": {"requests.cpu": "900m", "requests.memory": "1536Mi", "pods": "9"},
                }
            )
    status = {
        "phase": "Ready",
        "observedGeneration": 1,
        "placements": sorted(placements, key=lambda p: (p["environment"], p["cluster"])),
        "used": {"cpu": "2700m", "memory": "4608Mi", "pods": "27"},
        "conditions": set_condition(
            [], "Ready", "True", "Placed", f"{len(placements)} namespace(s) in place", 1
        ),
    }
    return spec, status


def _application(
    box: SecretBox, tenant: str, project: str, name: str, role: int, revision: int
) -> dict[str, Any]:
    """The spec of one revision: values and configuration move from revision to revision."""
    _, template = ROLES[role]
    values: dict[str, Any] = {
        "name": name,
        "image": f"registry.example.com/{tenant}/{project}/{ROLES[role][0]}:1.{revision}.0",
        "cpu": "100m",
        "memory": "128Mi",
        "cpu_limit": "500m",
        "memory_limit": "256Mi",
    }
    if template == "web-service":
        values.update(replicas=2, port=8080, health_path="/healthz", max_replicas=10)
    elif template == "worker":
        values.update(replicas=1)
    elif template == "stateful-service":
        values.update(replicas=1, port=5432, storage="10Gi")
    else:
        values.update(schedule="*/15 * * * *", command="/app/run-report")
    config: dict[str, Any] = {
        "configMaps": {
            "settings": {"LOG_LEVEL": "info" if revision < 2 else "debug", "REGION": "eu-1"}
        }
    }
    if template == "stateful-service":
        at = place("Application", tenant, name, "spec.config.secrets.credentials.PASSWORD")
        config["secrets"] = {"credentials": {"PASSWORD": box.seal(f"s3cret-{name}", at)}}
    spec = {
        "project": project,
        "environment": "prod",
        "template": {"name": template, "version": "1.0.0"},
        "values": values,
        "config": config,
    }
    if role == 0:
        spec["overrides"] = {"prod-b": {"replicas": 3, "env": {"REGION": "eu-2"}}}
    return ApplicationSpec.model_validate(spec).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )


def _app_status(name: str, template: str, now: dt.datetime) -> dict[str, Any]:
    kind = {"stateful-service": "StatefulSet", "cron-job": ""}.get(template, "Deployment")
    clusters = {}
    for cluster in ("prod-a", "prod-b"):
        workloads = []
        pods = []
        if kind:
            workloads = [
                {
                    "kind": kind,
                    "name": name,
                    "desired": 2,
                    "updated": 2,
                    "ready": 2,
                    "available": 2,
                    "conditions": [{"type": "Available", "status": "True", "reason": ""}],
                }
            ]
            pods = [
                {
                    "name": f"{name}-5d8f7c9b4-{k}x{k}q",
                    "node": f"{cluster}-node-{k}",
                    "phase": "Running",
                }
                for k in range(2)
            ]
        clusters[cluster] = {
            "state": "Available",
            "message": "",
            "workloads": workloads,
            "pods": pods,
            "events": [
                {
                    "type": "Normal",
                    "reason": "ScalingReplicaSet",
                    "object": f"Deployment/{name}",
                    "message": f"Scaled up replica set {name}-5d8f7c9b4 to 2",
                    "time": _ts(now),
                }
            ],
        }
    return {
        "state": "Available",
        "reason": "available in prod-a, prod-b",
        "observedGeneration": 1,
        "clusters": clusters,
        "warnings": [],
        "conditions": set_condition(
            [], "Available", "True", "Available", "available in prod-a, prod-b", 1
        ),
    }


def seed(
    url: str, tenants: int, projects: int, apps_per_project: int, events: int
) -> dict[str, Any]:
    """Fill a fresh database in one transaction; return what was made, and the dialect."""
    db = Database(url)
    box = SecretBox(SealingKey.from_passphrase(SECRET_KEY))
    now = dt.datetime.now(dt.UTC)
    counts = {"projects": 0, "applications": 0, "revisions": 0, "events": 0}
    try:
        migrate(db)  # the server migrates too; this seeds on the schema it will find
        with db.session() as session:
            if session.execute(select(func.count()).select_from(resources)).scalar_one():
                raise SystemExit(f"{db.dialect} database at {url} is not empty: use a fresh one")
            store = ResourceStore(session)
            seed_catalog(session)
            # What the server's bootstrap would do, since it only does it for an empty user table.
            identity.create_user(session, "admin", PASSWORD)
            identity.grant(session, "admin", "platform-admin")
            for user in USERS:
                identity.create_user(session, user, None)
            for c, cluster in enumerate(CLUSTERS):
                store.create(
                    "Cluster",
                    "",
                    cluster,
                    labels={"env": "prod", "region": f"eu-{c + 1}"},
                    annotations={},
                    spec={
                        "kubeconfig": box.seal(
                            "apiVersion: v1\nkind: Config\n",
                            place("Cluster", "", cluster, "spec.kubeconfig"),
                        ),
                        "description": "",
                    },
                    status={
                        "phase": "Ready",
                        "kubernetesVersion": "v1.31.2",
                        "capacity": {
                            "nodes": 12,
                            "allocatable": {"cpu": "192", "memory": "768Gi", "pods": "1320"},
                            "requested": {"cpu": "120", "memory": "400Gi", "pods": "900"},
                        },
                    },
                )
            member_rows: list[dict[str, str]] = []
            revision_rows: list[dict[str, Any]] = []
            per_tenant = max(1, projects // tenants)
            for t in range(tenants):
                tenant = f"t{t:02d}"
                spec, status = _tenant(t, per_tenant)
                store.create(
                    "Tenant",
                    "",
                    tenant,
                    labels={"cost-center": f"cc-{t % 5}"},
                    annotations={},
                    spec=spec,
                    status=status,
                )
                member_rows += [
                    {"user": u, "role": "tenant-admin", "tenant": tenant, "project": ""}
                    for u in spec["admins"]
                ]
                member_rows += [
                    {"user": u, "role": "viewer", "tenant": tenant, "project": ""}
                    for u in spec["viewers"]
                ]
                for p in range(per_tenant):
                    i = t * per_tenant + p
                    project = f"p{i:04d}"
                    spec, status = _project(tenant, project, i)
                    store.create(
                        "Project",
                        tenant,
                        project,
                        labels={"team": f"team-{i % 7}"},
                        annotations={},
                        spec=spec,
                        status=status,
                    )
                    counts["projects"] += 1
                    member_rows += [
                        {"user": m["user"], "role": m["role"], "tenant": tenant, "project": project}
                        for m in spec["members"]
                    ]
                    for a in range(apps_per_project):
                        role = a % len(ROLES)
                        name = f"{project}-{ROLES[role][0]}-{a // len(ROLES)}"
                        n_revisions = 1 + (i + a + 1) % 3
                        specs = [
                            _application(box, tenant, project, name, role, r)
                            for r in range(1, n_revisions + 1)
                        ]
                        store.create(
                            "Application",
                            tenant,
                            name,
                            labels={PROJECT_LABEL: project, "team": f"team-{i % 7}"},
                            annotations={CHANGE_CAUSE: f"release 1.{n_revisions}.0"},
                            spec=specs[-1],
                            status=_app_status(name, ROLES[role][1], now),
                        )
                        counts["applications"] += 1
                        revision_rows += [
                            {
                                "tenant": tenant,
                                "application": name,
                                "number": r,
                                "spec": s,
                                "actor": USERS[(i + r) % len(USERS)],
                                "reason": f"release 1.{r}.0",
                                "created_at": now - dt.timedelta(days=n_revisions - r),
                            }
                            for r, s in enumerate(specs, start=1)
                        ]
            session.execute(insert(memberships), member_rows)
            for start in range(0, len(revision_rows), 2000):
                session.execute(insert(revisions), revision_rows[start : start + 2000])
            counts["revisions"] = len(revision_rows)
            for e in range(events):
                i = e % counts["projects"]
                tenant, project = f"t{i // per_tenant:02d}", f"p{i:04d}"
                outcome = "denied" if e % 23 == 0 else ("failed" if e % 17 == 0 else "allowed")
                kind, name = (
                    ("Project", project) if e % 3 == 0 else ("Application", f"{project}-web-0")
                )
                record(
                    session,
                    AuditEvent(
                        actor=USERS[e % len(USERS)],
                        source="10.0.0.12",
                        action="delete" if e % 50 == 0 else "apply",
                        kind=kind,
                        tenant=tenant,
                        name=name,
                        outcome=outcome,
                        reason="" if outcome == "allowed" else f"refused: example reason {e}",
                        diff=[
                            {
                                "path": "spec.values.image",
                                "old": f"img:1.{e}.0",
                                "new": f"img:1.{e + 1}.0",
                            },
                            {"path": "spec.values.replicas", "old": 2, "new": 3},
                        ]
                        if outcome == "allowed"
                        else None,
                        project=project,
                    ),
                )
            counts["events"] = events
        dialect = db.dialect
    finally:
        db.dispose()
    return {**counts, "tenants": tenants, "dialect": dialect}


# -- measuring ---------------------------------------------------------------------------------
NEXT = re.compile(r'<a href="([^"]+)" rel="next">')


def next_page(text: str) -> str | None:
    found = NEXT.search(text)
    return html.unescape(found.group(1)) if found else None


def log_size(log: Path) -> int:
    return log.stat().st_size


FRAME = re.compile(r"\S+\.py:\d+ in \S+")


def log_since(log: Path, offset: int) -> str:
    """The server's log after offset, its (rich) tracebacks cut to frames and the error."""
    # The server logs an exception after it has answered 500, and rich takes its time: wait
    # until the log has grown and stopped growing.
    size, deadline = -1, time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = log.stat().st_size
        if now > offset and now == size:
            break
        size = now
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return "\n".join(
        line.strip("│ ").rstrip()
        for line in text.splitlines()
        if not line.startswith(("│", "╭", "╰")) or FRAME.search(line) or "❱" in line
    )


class Failed(Exception):
    pass


async def fetch(client: httpx.AsyncClient, url: str, expect: str) -> tuple[float, int]:
    """One GET; its latency in ms and size in bytes. Anything but 200 with `expect` fails."""
    sent = time.perf_counter()
    response = await client.get(url)
    elapsed = (time.perf_counter() - sent) * 1000
    if response.status_code != 200 or expect not in response.text:
        raise Failed(
            f"GET {url}: {response.status_code}, expected 200 with {expect!r}; body starts:\n"
            f"{response.text[:600]}"
        )
    return elapsed, len(response.content)


async def measure(
    client: httpx.AsyncClient, url: str, expect: str, requests: int, rate: float
) -> list[float]:
    """`requests` GETs of url: one after another, or at `rate` per second (open loop)."""
    if rate <= 0:
        return [(await fetch(client, url, expect))[0] for _ in range(requests)]
    start = time.perf_counter()
    tasks = []
    for i in range(requests):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fetch(client, url, expect)))
    return [latency for latency, _ in await asyncio.gather(*tasks)]


def peak_rss_mb(pid: int) -> tuple[float, float] | None:
    """(VmHWM, VmRSS) of the server in MiB, from /proc (Linux only)."""
    try:
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        hwm, rss = (int(fields[k].split()[0]) / 1024 for k in ("VmHWM", "VmRSS"))
    except (OSError, KeyError, ValueError):
        return None
    return hwm, rss


async def run(base: str, args: argparse.Namespace, log: Path) -> list[str]:
    """Measure every page; return the failures (each with the server's log since it)."""
    failures: list[str] = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        login = await client.post(
            "/console/login", data={"username": "admin", "password": PASSWORD}
        )
        if login.status_code != 303 or "wharf_session" not in client.cookies:
            raise SystemExit(f"console login failed: {login.status_code} {login.text[:300]}")
        cookies = client.cookies
        project = f"p{focus(args.tenants, args.projects):04d}"
        app, secret_app = f"{project}-web-0", f"{project}-db-0"
        deep: dict[str, tuple[int, str]] = {}
        for listing in ("/console/projects", "/console/applications"):
            number, url = 1, listing
            while number < 10:  # follow "Next page" from page 1 to page 10 (or the last)
                following = next_page((await client.get(url)).text)
                if following is None:
                    break
                number, url = number + 1, following
            deep[listing] = number, url
        pages: list[tuple[str, str, str]] = [
            ("GET /healthz (baseline)", "/healthz", '"ok"'),
            ("overview /console/", "/console/", "<h1>Overview</h1>"),
            ("projects", "/console/projects", "<h1>Projects</h1>"),
            (
                f"projects ?tenant={TENANT}",
                f"/console/projects?tenant={TENANT}",
                "<h1>Projects</h1>",
            ),
            (
                f"projects, page {deep['/console/projects'][0]} (continue)",
                deep["/console/projects"][1],
                "<h1>Projects</h1>",
            ),
            ("applications", "/console/applications", "<h1>Applications</h1>"),
            (
                f"applications ?tenant={TENANT}&project={project}",
                f"/console/applications?tenant={TENANT}&project={project}",
                "<h1>Applications</h1>",
            ),
            (
                f"applications, page {deep['/console/applications'][0]} (continue)",
                deep["/console/applications"][1],
                "<h1>Applications</h1>",
            ),
            (
                f"project {TENANT}/{project}",
                f"/console/tenants/{TENANT}/projects/{project}",
                f"<h1>Project {project}",
            ),
            (
                f"application {TENANT}/{app} (no secrets)",
                f"/console/tenants/{TENANT}/applications/{app}",
                f"<h1>Application {app}</h1>",
            ),
            (
                f"application {TENANT}/{secret_app} (sealed secrets)",
                f"/console/tenants/{TENANT}/applications/{secret_app}",
                f"<h1>Application {secret_app}</h1>",
            ),
            ("audit", "/console/audit", "<h1>Audit log</h1>"),
            ("tenants", "/console/tenants", "<h1>Tenants</h1>"),
        ]
        for _ in range(20):  # warm up the server
            await client.get("/healthz")
    mode = "one at a time" if args.rate <= 0 else f"at {args.rate:g} req/s"
    print(f"{args.requests} requests per page, {mode}")
    print(f"{'page':<58}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'KiB':>7}{'vs healthz':>12}")
    baseline = None
    for name, url, expect in pages:
        offset = log_size(log)
        # A client per page: the server drops a connection whose request raised.
        async with httpx.AsyncClient(base_url=base, cookies=cookies, timeout=60) as client:
            try:
                _, size = await fetch(client, url, expect)  # checks it, compiles its templates
                values = await measure(client, url, expect, args.requests, args.rate)
            except (Failed, httpx.HTTPError) as exc:
                print(f"{name:<58}{'FAILED':>9}")
                server_log = log_since(log, offset)[-8000:]
                failures.append(f"{name}: {str(exc) or repr(exc)}\n-- server log --\n{server_log}")
                continue
        p50, p99 = pct(values, 50), pct(values, 99)
        baseline = baseline or p50
        print(
            f"{name:<58}{p50:>9.2f}{p99:>9.2f}{max(values):>9.2f}{size / 1024:>7.1f}"
            f"{p50 / baseline:>11.1f}x"
        )
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="per page")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="requests per second (0: one after another)"
    )
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--apps-per-project", type=int, default=10)
    parser.add_argument("--events", type=int, default=5000, help="audit events")
    parser.add_argument(
        "--database-url", help="a fresh, empty database (default: a new SQLite file)"
    )
    args = parser.parse_args()
    if args.projects // args.tenants < 26 or args.tenants <= 7:
        raise SystemExit("need more than 7 tenants and at least 26 projects per tenant")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        started = time.perf_counter()
        made = seed(url, args.tenants, args.projects, args.apps_per_project, args.events)
        seeded = time.perf_counter() - started
        print(
            f"seeded {made['tenants']} tenants, {made['projects']} projects, "
            f"{made['applications']} applications ({made['revisions']} revisions), "
            f"{made['events']} audit events on {made['dialect']} in {seeded:.1f}s"
        )
        log = Path(tmp) / "server.log"
        port = free_port()
        started = time.perf_counter()
        server = start_server(
            port,
            {
                "WHARF_DATABASE_URL": url,
                "WHARF_CONTROLLERS": "false",
                "WHARF_LOG_FORMAT": "console",
            },
            log,
        )
        print(f"server ready in {time.perf_counter() - started:.1f}s (controllers off)")
        try:
            failures = asyncio.run(run(f"http://127.0.0.1:{port}", args, log))
            rss = peak_rss_mb(server.pid)
            if rss:
                print(f"server memory: peak RSS {rss[0]:.0f} MiB, now {rss[1]:.0f} MiB")
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(f"whole run {time.perf_counter() - began:.1f}s")
        for failure in failures:
            print(f"\nFAILED {failure}", file=sys.stderr)
        if failures:
            raise SystemExit(f"{len(failures)} page(s) failed")


if __name__ == "__main__":
    main()
