"""The console's metrics page of a project with 50 applications, next to its raw PromQL.

A real Prometheus (Debian's) scrapes a small exporter that serves the monitoring feed's series
(`wharf_pod_*`, `wharf_app_*`, `wharf_project_quota`) of 50 applications x 2 clusters x 2 pods
every second, for --fill seconds. A real `wharf server` (SQLite, controllers off) holds the
tenant and project and queries that Prometheus. Then, one after another, N times each:
the console's project metrics page (4 charts, 50 lines each, the quota lines; signed in) and
the same PromQL sent to Prometheus directly (the 5 range and 3 quota queries the page makes).
Prints p50/p99 of both, measured in the same run. Asserts nothing about time.

    uv run python bench/metrics_page.py [--requests 100] [--apps 50] [--fill 30]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.server
import random
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from benchkit import PASSWORD, free_port, pct, start_server

from wharf.lab.prometheus import Prometheus, ScrapeJob
from wharf.monitoring.model import CHARTS, Scope, chart_queries, quota_query, time_range

TENANT, PROJECT = "bench", "shop"
CLUSTERS = ("lab1", "lab2")


def feed_text(apps: int) -> str:
    lines = []
    for a in range(apps):
        for cluster in CLUSTERS:
            base = f'tenant="{TENANT}",project="{PROJECT}",app="app{a:02d}",cluster="{cluster}"'
            base += f',namespace="{TENANT}--{PROJECT}-dev"'
            lines.append(f"wharf_app_replicas{{{base}}} 2")
            lines.append(f"wharf_app_ready_replicas{{{base}}} 2")
            for p in range(2):
                pod = f'{base},pod="app{a:02d}-{p}"'
                lines.append(f"wharf_pod_cpu_usage_cores{{{pod}}} {random.uniform(0.05, 0.3):.3f}")
                lines.append(
                    f"wharf_pod_memory_usage_bytes{{{pod}}} {random.randint(1, 300) << 20}"
                )
                lines.append(f"wharf_pod_restarts_total{{{pod}}} 0")
                lines.append(f"wharf_pod_ready{{{pod}}} 1")
    for resource, value in (("cpu", 40), ("memory", 80 << 30), ("pods", 400)):
        lines.append(
            f'wharf_project_quota{{tenant="{TENANT}",project="{PROJECT}",resource="{resource}"}}'
            f" {value}"
        )
    return "\n".join(lines) + "\n"


def serve_feed(apps: int) -> int:
    port = free_port()

    class Feed(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = feed_text(apps).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Feed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return port


def seed(url: str) -> httpx.Client:
    """The tenant and project through the API (no clusters, so no quota in Wharf; the quota
    lines come from the feed's series); a console session for admin."""
    client = httpx.Client(base_url=url, timeout=60, follow_redirects=False)
    token = client.post("/api/v1/login", json={"username": "admin", "password": PASSWORD})
    bearer = {"Authorization": f"Bearer {token.json()['token']}"}
    for path, body in (
        (
            f"/api/v1/tenants/{TENANT}",
            {
                "kind": "Tenant",
                "metadata": {"name": TENANT},
                "spec": {"quota": {"cpu": "64", "memory": "128Gi"}},
            },
        ),
        (
            f"/api/v1/tenants/{TENANT}/projects/{PROJECT}",
            {
                "kind": "Project",
                "metadata": {"name": PROJECT},
                "spec": {"quota": {"cpu": "40", "memory": "80Gi"}},
            },
        ),
    ):
        answer = client.put(path, json=body, headers=bearer)
        answer.raise_for_status()
    signed = client.post("/console/login", data={"username": "admin", "password": PASSWORD})
    assert signed.status_code == 303, signed.text
    return client


def page_times(client: httpx.Client, requests: int, apps: int) -> list[float]:
    path = f"/console/tenants/{TENANT}/projects/{PROJECT}/metrics?range=15m"
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(path)
        times.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text[:500]
        lines = len(re.findall(r'<polyline class="series"', answer.text))
        assert lines == apps * 5, f"{lines} lines drawn"  # cpu, memory, restarts, 2 x replicas
    return times


def raw_times(prometheus_url: str, requests: int) -> list[float]:
    """The page's own PromQL, sent straight to Prometheus, one query after another."""
    scope = Scope(TENANT, PROJECT)
    times = []
    with httpx.Client(base_url=prometheus_url, timeout=30) as client:
        for _ in range(requests):
            now = dt.datetime.now(dt.UTC)
            when = time_range(now - dt.timedelta(minutes=15), now, None, now)
            started = time.perf_counter()
            for chart in CHARTS:
                for promql in chart_queries(chart, scope).values():
                    client.get(
                        "/api/v1/query_range",
                        params={
                            "query": promql,
                            "start": str(when.start.timestamp()),
                            "end": str(when.end.timestamp()),
                            "step": str(when.step),
                        },
                    ).raise_for_status()
                quota = quota_query(chart, scope)
                if quota:
                    params = {"query": quota, "time": str(when.end.timestamp())}
                    client.get("/api/v1/query", params=params).raise_for_status()
            times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--fill", type=int, default=30, help="seconds of scrapes first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        feed = serve_feed(args.apps)
        prometheus = Prometheus(
            workdir / "prometheus", [], "1s", [ScrapeJob("feed", [f"127.0.0.1:{feed}"])]
        )
        prometheus.start()
        port = free_port()
        env = {
            "WHARF_DATABASE_URL": f"sqlite:///{workdir / 'wharf.db'}",
            "WHARF_CONTROLLERS": "false",
            "WHARF_PROMETHEUS_URL": prometheus.url,
        }
        server = start_server(port, env, workdir / "server.log", timeout=300)
        try:
            client = seed(f"http://127.0.0.1:{port}")
            print(f"filling Prometheus for {args.fill}s ...", file=sys.stderr)
            time.sleep(args.fill)
            page_times(client, 3, args.apps)  # warm
            page = page_times(client, args.requests, args.apps)
            raw = raw_times(prometheus.url, args.requests)
        finally:
            server.terminate()
            server.wait()
            prometheus.stop()
    print(f"metrics page, project with {args.apps} applications, {args.requests} requests each:")
    for name, times in (("console page (4 charts)", page), ("raw PromQL (8 queries)", raw)):
        print(
            f"  {name:<26} p50 {pct(times, 50) * 1000:7.1f} ms"
            f"   p99 {pct(times, 99) * 1000:7.1f} ms"
        )


if __name__ == "__main__":
    main()
