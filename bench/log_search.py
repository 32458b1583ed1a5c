"""Log search over a million lines across 2 tenants: Wharf's search API next to the log store
queried directly, in the same run.

A lab of 2 clusters, a real `wharf server` (SQLite) with WHARF_LOG_STORE_URL, and the lab's
VictoriaLogs and vlagent (built by `wharf lab build`). Two tenants, each a project placed on
both clusters and an application `web`. The collector runs with the flags Wharf renders from
its database; the bench writes --lines lines in all (half per tenant, spread over 4 pods per
tenant and cluster, in the kubelet's file layout the collector reads) and waits until the store
holds every one. Then, one after another, N times each: a rare text, a common text (a full
page) and a regular expression, asked of Wharf's API (`…/logs/search`, the admin's token) and
the same LogsQL with the same tenant, bounds and `extra_filters` sent to the store directly.
Prints p50/p99 of both. Asserts nothing about time.

    uv run python bench/log_search.py [--lines 1000000] [--requests 50]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from benchkit import PASSWORD, free_port, pct, start_server

from wharf.lab import Lab, find_binaries
from wharf.lab.build import build_victorialogs
from wharf.lab.logstore import LogStore
from wharf.lab.podlogs import cri_line
from wharf.logs.model import LogSearch, collector_flags
from wharf.logs.service import log_sources
from wharf.store.database import Database

TENANTS = ("benchshop", "benchbank")
PODS = 4
QUERIES = {
    "rare text": {"q": "refund "},
    "common text (page of 100)": {"q": "paid", "limit": 100},
    "regex (status=5xx)": {"q": "status=5[0-9][0-9] ", "regex": True, "limit": 100},
}


def ok(answer: httpx.Response) -> Any:
    if answer.status_code >= 400:
        raise SystemExit(f"{answer.request.method} {answer.request.url}: {answer.text}")
    return answer.json()


def wait(what: str, check: Any, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


def set_up(http: httpx.Client, lab: Lab) -> None:
    names = [c.name for c in lab.clusters()]
    for cluster in lab.clusters():
        body = {
            "kind": "Cluster",
            "metadata": {"name": cluster.name},
            "spec": {"kubeconfig": cluster.kubeconfig.read_text()},
        }
        ok(http.put(f"/api/v1/clusters/{cluster.name}", json=body))
    quota = {"cpu": "4", "memory": "8Gi", "pods": "20"}
    for tenant in TENANTS:
        body = {"kind": "Tenant", "metadata": {"name": tenant}, "spec": {"quota": quota}}
        body["spec"]["clusters"] = names
        ok(http.put(f"/api/v1/tenants/{tenant}", json=body))
        project = {
            "kind": "Project",
            "metadata": {"name": "shop"},
            "spec": {"quota": quota, "environments": [{"name": "dev", "clusters": names}]},
        }
        ok(http.put(f"/api/v1/tenants/{tenant}/projects/shop", json=project))
        app = {
            "kind": "Application",
            "metadata": {"name": "web", "tenant": tenant},
            "spec": {
                "project": "shop",
                "environment": "dev",
                "template": {"name": "web-service", "version": "1.0.0"},
                "values": {"name": "web", "image": "registry.example/web:1", "replicas": 1},
            },
        }
        wait(
            f"{tenant}/shop placed",
            lambda t=tenant: (
                ok(http.get(f"/api/v1/tenants/{t}/projects/shop"))["status"].get("phase") == "Ready"
            ),
        )
        ok(http.put(f"/api/v1/tenants/{tenant}/applications/web", json=app))


def write_lines(lab: Lab, total: int) -> None:
    """`total` lines in the files of 4 pods of `web` per tenant and cluster (CRI format)."""
    files = [
        cluster.pod_log_dir / f"{tenant}--shop-dev_web-5f6b8c7d9-p{n:04d}_uid{n}" / "web" / "0.log"
        for tenant in TENANTS
        for cluster in lab.clusters()
        for n in range(PODS)
    ]
    per_file = total // len(files)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    for index, path in enumerate(files):
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(per_file):
            n = index * per_file + i
            status = 503 if n % 997 == 0 else 200
            word = f"refund {n} " if n % (total // 10) == 4242 % (total // 10) else "paid"
            text = f"order {n} {word} by user{n % 5000} status={status} took {n % 300}ms"
            lines.append(cri_line(text, start + dt.timedelta(microseconds=n)))
        with path.open("a") as handle:
            handle.writelines(lines)


def stored(store: LogStore, accounts: dict[str, int]) -> int:
    total = 0
    now = dt.datetime.now(dt.UTC)
    window = {"start": (now - dt.timedelta(days=1)).isoformat(), "end": now.isoformat()}
    for account in accounts.values():
        answer = httpx.post(
            f"{store.url}/select/logsql/query",
            data={"query": "* | stats count() n", **window},
            headers={"AccountID": str(account)},
            timeout=60,
        )
        rows = [json.loads(line) for line in answer.text.splitlines() if line]
        total += int(rows[0]["n"]) if rows else 0
    return total


def timed(send: Any, requests: int) -> tuple[list[float], int]:
    times, found = [], 0
    for _ in range(requests):
        started = time.perf_counter()
        found = send()
        times.append((time.perf_counter() - started) * 1000)
    return times, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("build the lab first: uv run wharf lab build")
    build_victorialogs()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        lab = Lab(workdir / "lab", binaries)
        lab.up(clusters=2, nodes=1, progress=lambda _: None)
        store = LogStore(workdir / "logstore")
        store.start()
        port = free_port()
        database = f"sqlite:///{workdir / 'wharf.db'}"
        env = {"WHARF_DATABASE_URL": database, "WHARF_LOG_STORE_URL": store.url}
        server = start_server(port, env, workdir / "server.log", timeout=300)
        try:
            base = f"http://127.0.0.1:{port}"
            login = {"username": "admin", "password": PASSWORD}
            token = ok(httpx.post(f"{base}/api/v1/login", json=login))["token"]
            http = httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120
            )
            set_up(http, lab)
            sources = log_sources(Database(database))
            accounts = {s.tenant: s.account for s in sources}
            write_lines(lab, args.lines)
            started = time.monotonic()
            directories = {c.name: str(c.pod_log_dir) for c in lab.clusters()}
            store.ship(collector_flags(sources, directories))
            expected = args.lines // (len(TENANTS) * 2 * PODS) * len(TENANTS) * 2 * PODS
            wait("every line stored", lambda: stored(store, accounts) >= expected, 1200)
            print(f"{expected} lines shipped and stored in {time.monotonic() - started:.0f} s")
            results = run(http, store, accounts, args.requests)
        finally:
            server.terminate()
            server.wait(timeout=30)
            store.stop()
            lab.down(progress=lambda _: None)
    print(f"log search over {expected} lines, {len(TENANTS)} tenants, {args.requests} each")
    print(f"{'':<30}{'lines':>7}{'wharf p50':>11}{'p99':>8}{'store p50':>11}{'p99':>8}  ms")
    for name, (wharf_times, found, direct_times) in results.items():
        print(
            f"{name:<30}{found:>7}{pct(wharf_times, 50):>11.1f}{pct(wharf_times, 99):>8.1f}"
            f"{pct(direct_times, 50):>11.1f}{pct(direct_times, 99):>8.1f}"
        )


def run(
    http: httpx.Client, store: LogStore, accounts: dict[str, int], requests: int
) -> dict[str, tuple[list[float], int, list[float]]]:
    tenant = TENANTS[0]
    path = f"/api/v1/tenants/{tenant}/applications/web/logs/search"
    namespace = f"{tenant}--shop-dev"
    results = {}
    direct = httpx.Client(timeout=60)
    for name, asked in QUERIES.items():
        params = {"since": "1h", **asked}

        def through_wharf(params: dict[str, Any] = params) -> int:
            return len(ok(http.get(path, params=params))["items"])

        search = LogSearch.of(
            "1h", None, str(asked["q"]), bool(asked.get("regex")), limit=asked.get("limit")
        )
        start, end, offset = search.window()
        data = {
            "query": search.logsql(namespace, "web"),
            "start": start,
            "end": end,
            "limit": str(search.limit),
            "offset": str(offset),
            "timeout": "10s",
            "extra_filters": json.dumps(
                {"tenant": tenant, "namespace": namespace, "cluster": ["lab1", "lab2"]}
            ),
        }
        headers = {"AccountID": str(accounts[tenant]), "ProjectID": "0"}

        def to_store(data: dict[str, str] = data, headers: dict[str, str] = headers) -> int:
            answer = direct.post(f"{store.url}/select/logsql/query", data=data, headers=headers)
            if answer.status_code != 200:
                raise SystemExit(f"the store answered {answer.status_code}: {answer.text}")
            return len(answer.text.splitlines())

        through_wharf()  # once each before timing: connections open, caches warm alike
        to_store()
        wharf_times, found = timed(through_wharf, requests)
        direct_times, _ = timed(to_store, requests)
        results[name] = (wharf_times, found, direct_times)
    return results


if __name__ == "__main__":
    main()
