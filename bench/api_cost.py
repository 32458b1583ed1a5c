"""The server's CPU per API request: list, get and mutation, next to an empty endpoint.

Starts a real `wharf server` (SQLite by default; WHARF_DATABASE_URL for PostgreSQL), seeds
tenants and projects through the API, waits until the server is idle (its CPU under 5 % of a
core), then sends each kind of request in a closed loop (`--clients` at a time, `--seconds`
each) and prints the requests per second reached and the server process's own CPU time per
request (user + system, from /proc), next to `/healthz` measured the same way in the same run.

Latency at a fixed rate (bench/api_latency.py) is what a user sees; this is why: a request
that costs the server C ms of CPU cannot be answered more than 1000 / C times a second by one
process, whatever else it does. It includes what the controllers do in reaction (a project's
write is placed, its status written, its tenant's totals recounted). Asserts nothing.

    uv run python bench/api_cost.py [--tenants 20] [--projects 1000] [--clients 4]
        [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from api_latency import seed
from benchkit import PASSWORD, cpu_seconds, free_port, pct, start_server


def settle(pid: int, limit: float = 120.0) -> float:
    """Wait until the server uses under 5 % of a core over 2 s; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        before = cpu_seconds(pid)
        time.sleep(2)
        if cpu_seconds(pid) - before < 0.1:
            break
    return time.monotonic() - started


def project(name: str, n: int) -> dict[str, Any]:
    return {
        "kind": "Project",
        "metadata": {"name": name, "labels": {"team": "x1"}},
        "spec": {"quota": {"count/configmaps": "10"}, "displayName": f"run {n}"},
    }


Send = Callable[[httpx.AsyncClient, int, int], Any]


async def closed_loop(
    base: str, token: str, send: Send, clients: int, seconds: float
) -> list[float]:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:

        async def client(i: int) -> None:
            n = 0
            while time.perf_counter() < stop:
                n += 1
                started = time.perf_counter()
                (await send(http, i, n)).raise_for_status()
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(client(i) for i in range(clients)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    rows: list[tuple[str, Send]] = [
        ("empty (GET /healthz)", lambda h, i, n: h.get("/healthz")),
        ("list (GET /api/v1/projects?limit=100)", lambda h, i, n: h.get("/api/v1/projects")),
        ("get (GET one project)", lambda h, i, n: h.get("/api/v1/tenants/bench001/projects/p0007")),
        (
            "mutation (PUT a project)",
            lambda h, i, n: h.put(
                f"/api/v1/tenants/bench002/projects/p{i:04d}", json=project(f"p{i:04d}", n)
            ),
        ),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        db = os.environ.get("WHARF_DATABASE_URL") or f"sqlite:///{Path(tmp) / 'bench.db'}"
        port = free_port()
        server = start_server(port, {"WHARF_DATABASE_URL": db}, timeout=300)
        base = f"http://127.0.0.1:{port}"
        try:
            token = httpx.post(
                f"{base}/api/v1/login", json={"username": "admin", "password": PASSWORD}
            ).json()["token"]
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as http:
                seed(http, args.tenants, args.projects)
            waited = settle(server.pid)
            print(
                f"seeded {args.tenants} tenants, {args.projects} projects; idle after "
                f"{waited:.0f}s; {args.clients} clients in a closed loop, {args.seconds:.0f}s each"
            )
            print(f"{'endpoint':42} {'req/s':>8} {'CPU ms/req':>11} {'p50 ms':>8} {'p99 ms':>8}")
            empty = None
            for label, send in rows:
                before, started = cpu_seconds(server.pid), time.perf_counter()
                latencies = asyncio.run(closed_loop(base, token, send, args.clients, args.seconds))
                wall = time.perf_counter() - started
                cost = 1000 * (cpu_seconds(server.pid) - before) / len(latencies)
                empty = empty or cost
                print(
                    f"{label:42} {len(latencies) / wall:8.1f} {cost:11.2f} "
                    f"{1000 * pct(latencies, 50):8.1f} {1000 * pct(latencies, 99):8.1f}"
                    f"   ({cost / empty:.1f}x the empty request's CPU)",
                    flush=True,
                )
                settle(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
