"""API latency at a steady request rate: list, get and mutation, next to an empty endpoint.

Starts a real `wharf server` (SQLite by default; WHARF_DATABASE_URL for PostgreSQL), seeds
tenants and projects, then sends requests on a fixed schedule (open loop: a slow answer does
not slow the sender) and prints p50/p99 per endpoint beside /healthz of the same server,
measured in the same run, and in each endpoint's window the servers' CPU (% of one core) and
the whole machine's (% of all its cores: at 100 everything on it waits its turn).
Prints figures; asserts nothing about time.

By default (`--busy`) the controllers are kept busy throughout: a one-cluster lab is started
and registered, a tenant's projects are placed on it, and a steady churn of quota and label
edits on those projects (other projects than the measured ones) keeps the placement
controller applying ResourceQuotas, writing project status and recounting the tenant's
totals while each endpoint is measured. Each row says how many reconciles ran in its window.
`--no-busy` measures once the controllers are idle (the figures before issue 16).

`--api-servers N` (PostgreSQL only) starts N more servers with WHARF_CONTROLLERS=false, as
the Helm chart's API deployment runs them, and sends the measured requests to those in turn
(a Service in front of them); the first server runs the controllers and takes the churn.

    uv run python bench/api_latency.py [--rate 50] [--seconds 10] [--projects 1000]
        [--busy | --no-busy] [--churn 10] [--churn-projects 20] [--api-servers N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from benchkit import (
    PASSWORD,
    cpu_seconds,
    free_port,
    host_busy,
    pct,
    register_cluster,
    start_server,
)

from wharf.lab import Lab, find_binaries

CHURN_TENANT = "churn"
Request = tuple[str, str, dict[str, Any] | None]


def seed(http: httpx.Client, tenants: int, projects: int) -> None:
    per_tenant = max(1, projects // tenants)
    for t in range(tenants):
        name = f"bench{t:03d}"
        http.put(
            f"/api/v1/tenants/{name}",
            json={
                "kind": "Tenant",
                "metadata": {"name": name},
                "spec": {"quota": {"count/configmaps": str(per_tenant * 10)}},
            },
        ).raise_for_status()
        for p in range(per_tenant):
            http.put(
                f"/api/v1/tenants/{name}/projects/p{p:04d}",
                json={
                    "kind": "Project",
                    "metadata": {"name": f"p{p:04d}", "labels": {"team": f"x{p % 7}"}},
                    "spec": {"quota": {"count/configmaps": "10"}},
                },
            ).raise_for_status()


def churn_project(cluster: str, i: int, quota: int, labels: dict[str, str]) -> dict[str, Any]:
    name = f"c{i:03d}"
    return {
        "kind": "Project",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "quota": {"count/configmaps": str(quota)},
            "environments": [{"name": "dev", "clusters": [cluster]}],
        },
    }


def place_churn_projects(http: httpx.Client, lab: Lab, count: int) -> str:
    """Register the lab's cluster and place `count` projects of one tenant on it; its name."""
    cluster = lab.clusters()[0]
    register_cluster(http, cluster.name, cluster.kubeconfig)
    wait_for("the cluster's capacity", lambda: _cluster_ready(http, cluster.name))
    http.put(
        f"/api/v1/tenants/{CHURN_TENANT}",
        json={
            "kind": "Tenant",
            "metadata": {"name": CHURN_TENANT},
            "spec": {
                "quota": {"count/configmaps": str(count * 20)},
                "clusters": [cluster.name],
            },
        },
    ).raise_for_status()
    for i in range(count):
        http.put(
            f"/api/v1/tenants/{CHURN_TENANT}/projects/c{i:03d}",
            json=churn_project(cluster.name, i, 10, {}),
        ).raise_for_status()
    wait_for("the churn projects' namespaces", lambda: _placed(http, count))
    return cluster.name


def _cluster_ready(http: httpx.Client, name: str) -> bool:
    status = http.get(f"/api/v1/clusters/{name}").json()["status"]
    return bool(status.get("capacity")) and status.get("phase") == "Ready"


def _placed(http: httpx.Client, count: int) -> bool:
    page = http.get(f"/api/v1/tenants/{CHURN_TENANT}/projects", params={"limit": 500}).json()
    ready = [p for p in page["items"] if p["status"].get("phase") == "Ready"]
    return len(ready) == count


def wait_for(what: str, check: Callable[[], bool], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise SystemExit(f"{what}: not there within {timeout:.0f}s")


def _metric(http: httpx.Client, name: str) -> dict[str, float]:
    """One metric's value by its `controller` label."""
    out: dict[str, float] = {}
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('controller="', 1)[1].split('"', 1)[0]] = float(value)
    return out


def wait_idle(http: httpx.Client) -> None:
    """Wait until the controllers have placed what was seeded."""
    wait_for(
        "the controllers settling",
        lambda: not any(_metric(http, "wharf_controller_queue_depth").values()),
    )


class Churn:
    """Quota and label edits on the churn tenant's projects at a fixed rate (open loop),
    for as long as it runs; each one gives the placement controller a reconcile."""

    def __init__(self, cluster: str, projects: int, rate: float) -> None:
        self.cluster, self.projects, self.rate = cluster, projects, rate
        self.sent = 0
        self.answers: Counter[str] = Counter()

    def edit(self, n: int) -> Request:
        i, round_ = n % self.projects, n // self.projects
        # Odd rounds move the quota (a ResourceQuota to apply, a status and the tenant's
        # totals to write); even rounds move a label only.
        quota = 10 + (round_ + 1) // 2 % 2
        body = churn_project(self.cluster, i, quota, {"rev": str(round_ % 4)})
        return "PUT", f"/api/v1/tenants/{CHURN_TENANT}/projects/c{i:03d}", body

    async def run(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        tasks: set[asyncio.Task[None]] = set()

        async def one(n: int) -> None:
            method, url, body = self.edit(n)
            try:
                answer = str((await client.request(method, url, json=body)).status_code)
            except httpx.HTTPError as exc:  # counted, as a slow answer is: the churn goes on
                answer = type(exc).__name__
            self.answers[answer] += 1

        start = time.perf_counter()
        while not stop.is_set():
            delay = start + self.sent / self.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(self.sent))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            self.sent += 1
        await asyncio.gather(*tasks)


async def measure(
    clients: list[httpx.AsyncClient],
    make: Callable[[int], Request],
    rate: float,
    seconds: float,
) -> list[float]:
    """Send make(i) at `rate` per second for `seconds`, to the servers in turn; return each
    latency in ms."""
    latencies: list[float] = []
    interval = 1.0 / rate
    start = time.perf_counter()
    tasks = []

    async def one(i: int) -> None:
        method, url, body = make(i)
        sent = time.perf_counter()
        response = await clients[i % len(clients)].request(method, url, json=body)
        latencies.append((time.perf_counter() - sent) * 1000)
        if response.status_code >= 400:
            raise SystemExit(f"{method} {url}: {response.status_code} {response.text}")

    for i in range(int(rate * seconds)):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return latencies


def cases(project: dict[str, Any]) -> dict[str, Callable[[int], Request]]:
    def mutate(i: int) -> Request:
        body = {**project, "spec": {**project["spec"], "displayName": f"run {i}"}}
        body["metadata"] = {"name": "p0000"}
        return "PUT", "/api/v1/tenants/bench000/projects/p0000", body

    def mutate_many(i: int) -> Request:
        # As seeded, with a new display name: fifty projects of one tenant in turn.
        name = f"p{i % 50:04d}"
        body = {
            "kind": "Project",
            "metadata": {"name": name, "labels": {"team": f"x{i % 50 % 7}"}},
            "spec": {"quota": {"count/configmaps": "10"}, "displayName": f"run {i}"},
        }
        return "PUT", f"/api/v1/tenants/bench000/projects/{name}", body

    return {
        "empty (GET /healthz)": lambda i: ("GET", "/healthz", None),
        "list (GET /api/v1/projects?limit=100)": lambda i: (
            "GET",
            "/api/v1/projects?limit=100",
            None,
        ),
        "get (GET one project)": lambda i: (
            "GET",
            f"/api/v1/tenants/bench000/projects/p{i % 50:04d}",
            None,
        ),
        "mutation (PUT one project)": mutate,
        "mutation (PUT 50 projects in turn)": mutate_many,
    }


@contextmanager
def reconciles(http: httpx.Client, pids: list[int], into: dict[str, float]) -> Iterator[None]:
    """The controllers' reconciles during the block, by controller, and the servers' CPU
    in % of one core (into `into`)."""
    before = _metric(http, "wharf_controller_reconciles")
    cpu, started, host = [cpu_seconds(p) for p in pids], time.perf_counter(), host_busy()
    yield
    elapsed = time.perf_counter() - started
    into["cpu"] = sum(cpu_seconds(p) - c for p, c in zip(pids, cpu, strict=True)) / elapsed * 100
    busy, total = (now - then for now, then in zip(host_busy(), host, strict=True))
    into["host"] = busy / total * 100
    after = _metric(http, "wharf_controller_reconciles")
    into.update({k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)})


async def run(
    bases: list[str],
    token: str,
    rate: float,
    seconds: float,
    churn: Churn | None,
    http: httpx.Client,
    pids: list[int],
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    measured = bases[1:] or bases  # the API-only servers when there are any
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=b, headers=headers, timeout=30)
            )
            for b in measured
        ]
        base = bases[0]
        project = (await clients[0].get("/api/v1/tenants/bench000/projects/p0000")).json()
        stop = asyncio.Event()
        # The churn has its own connections: its requests never wait for the measured ones'.
        other = httpx.AsyncClient(base_url=base, headers=headers, timeout=30)
        churning = asyncio.create_task(churn.run(other, stop)) if churn else None
        await measure(clients, cases(project)["empty (GET /healthz)"], rate, 1.0)  # warm up
        print(
            f"{'endpoint':<42}{'p50 ms':>10}{'p99 ms':>10}{'vs empty p50':>15}{'CPU %':>8}"
            f"{'host %':>8}   reconciles"
        )
        baseline = None
        started, sent = time.perf_counter(), churn.sent if churn else 0
        for name, make in cases(project).items():
            done: dict[str, float] = {}
            with reconciles(http, pids, done):
                values = await measure(clients, make, rate, seconds)
            p50, p99 = pct(values, 50), pct(values, 99)
            baseline = baseline or p50
            cpu, host = done.pop("cpu"), done.pop("host")
            counted = ", ".join(f"{k} {v:.0f}" for k, v in sorted(done.items())) or "none"
            print(
                f"{name:<42}{p50:>10.2f}{p99:>10.2f}{p50 / baseline:>14.1f}x{cpu:>8.0f}"
                f"{host:>8.0f}   {counted}"
            )
        if churn and churning:
            elapsed, edits = time.perf_counter() - started, churn.sent - sent
            stop.set()
            await churning
            answers = ", ".join(f"{k}: {v}" for k, v in sorted(churn.answers.items()))
            print(
                f"churn: {edits / elapsed:.1f} project edits/s on {churn.projects} placed "
                f"projects while measuring (answers {answers})"
            )
        await other.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint")
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument(
        "--busy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the controllers busy while measuring (a lab cluster and a churn of edits)",
    )
    parser.add_argument("--churn", type=float, default=10.0, help="project edits per second")
    parser.add_argument("--churn-projects", type=int, default=20)
    parser.add_argument(
        "--api-servers",
        type=int,
        default=0,
        help="more servers without controllers to measure (PostgreSQL)",
    )
    args = parser.parse_args()
    binaries = find_binaries()
    if args.busy and binaries is None:
        raise SystemExit("--busy needs the lab: uv run wharf lab build (or pass --no-busy)")
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(Path(tmp) / "lab", binaries) if args.busy and binaries else None
        server = None
        api_servers: list[Any] = []
        try:
            if lab is not None:
                lab.up(clusters=1, nodes=1, progress=lambda _: None)
            port = free_port()
            db = os.environ.get("WHARF_DATABASE_URL") or f"sqlite:///{Path(tmp) / 'bench.db'}"
            if args.api_servers and not db.startswith("postgresql"):
                raise SystemExit("--api-servers needs PostgreSQL (WHARF_DATABASE_URL)")
            server = start_server(port, {"WHARF_DATABASE_URL": db}, timeout=300)
            base = f"http://127.0.0.1:{port}"
            bases = [base]
            for _ in range(args.api_servers):
                api_port = free_port()
                env = {"WHARF_DATABASE_URL": db, "WHARF_CONTROLLERS": "false"}
                api_servers.append(start_server(api_port, env, timeout=300))
                bases.append(f"http://127.0.0.1:{api_port}")
            token = httpx.post(
                f"{base}/api/v1/login",
                json={"username": "admin", "password": PASSWORD},
                timeout=60,
            ).json()["token"]
            http = httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
            )
            started = time.perf_counter()
            seed(http, args.tenants, args.projects)
            database = http.get("/api/v1/version").json()["database"]
            churn = None
            if lab is not None:
                cluster = place_churn_projects(http, lab, args.churn_projects)
                churn = Churn(cluster, args.churn_projects, args.churn)
            wait_idle(http)
            busy = (
                f"; busy: {args.churn:.0f} edits/s on {args.churn_projects} projects placed "
                "on a lab cluster"
                if churn
                else "; controllers idle"
            )
            print(
                f"seeded {args.tenants} tenants, {args.projects} projects on {database} "
                f"in {time.perf_counter() - started:.1f}s; {args.rate:.0f} req/s for "
                f"{args.seconds:.0f}s per endpoint{busy}"
                + (
                    f"; measured on {args.api_servers} API-only server(s)"
                    if args.api_servers
                    else ""
                )
            )
            pids = [server.pid] + [api.pid for api in api_servers]
            asyncio.run(run(bases, token, args.rate, args.seconds, churn, http, pids))
        finally:
            for api in api_servers:
                api.terminate()
                api.wait(timeout=30)
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
            if lab is not None:
                lab.down(progress=lambda _: None)


if __name__ == "__main__":
    main()
