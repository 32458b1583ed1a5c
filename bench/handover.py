"""Handover time of a killed replica's clusters, next to the lease time of the same run.

Three `wharf server` replicas on one (new) PostgreSQL database and a lab of three clusters;
each round SIGKILLs the replica owning the most clusters and times, from the kill, until
every cluster is owned by exactly one of the survivors (`wharf_cluster_owner` in their
/metrics), then starts a replica under a new name to bring the count back to three.

    WHARF_TEST_POSTGRES_URL=postgresql+psycopg://... uv run python bench/handover.py \\
        [--lease 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from benchkit import PASSWORD, free_port, start_server
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from wharf.lab import Lab, find_binaries

OWNER = re.compile(r'^wharf_cluster_owner\{cluster="([^"]+)",replica="([^"]+)"\} 1\.0$', re.M)


@contextmanager
def fresh_database(base: str) -> Iterator[str]:
    name = f"wharf_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Replica:
    def __init__(self, name: str, url: str, lease: float, workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        env = {
            "WHARF_DATABASE_URL": url,
            "WHARF_REPLICA": name,
            "WHARF_LEASE_SECONDS": str(lease),
            "WHARF_METRICS_PUBLIC": "true",
            "WHARF_HEARTBEAT_SECONDS": "1",
        }
        self.proc = start_server(self.port, env, log=workdir / f"{name}.log", timeout=300)

    def owned(self) -> list[str]:
        try:
            metrics = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text
        except httpx.HTTPError:
            return []
        return [cluster for cluster, _ in OWNER.findall(metrics)]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def owners(replicas: list[Replica], clusters: set[str]) -> dict[str, str] | None:
    """Each cluster with its one owner, or None while one has none or two."""
    seen: dict[str, list[str]] = {}
    for replica in replicas:
        for cluster in replica.owned():
            seen.setdefault(cluster, []).append(replica.name)
    if set(seen) != clusters or any(len(r) != 1 for r in seen.values()):
        return None
    return {c: r[0] for c, r in seen.items()}


def wait(predicate: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise SystemExit("timed out")


def register(port: int, lab: Lab) -> None:
    base = f"http://127.0.0.1:{port}"
    login = {"username": "admin", "password": PASSWORD}
    token = httpx.post(f"{base}/api/v1/login", json=login, timeout=30).json()["token"]
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    for cluster in lab.clusters():
        kubeconfig = cluster.user_kubeconfig("wharf", ("system:masters",)).read_text()
        body = {
            "kind": "Cluster",
            "metadata": {"name": cluster.name},
            "spec": {"kubeconfig": kubeconfig},
        }
        client.put(f"/api/v1/clusters/{cluster.name}", json=body).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lease", type=float, default=4.0, help="WHARF_LEASE_SECONDS")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # Stopped (a timeout's SIGTERM): still stop the replicas and the lab in `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    base = os.environ.get("WHARF_TEST_POSTGRES_URL")
    if not base:
        raise SystemExit("set WHARF_TEST_POSTGRES_URL (a PostgreSQL the bench may create in)")
    binaries = find_binaries()
    assert binaries is not None, "run `wharf lab build` first"
    names = (f"r{n}" for n in itertools.count(1))
    with tempfile.TemporaryDirectory() as tmp, fresh_database(base) as url:
        workdir = Path(tmp)
        lab = Lab(workdir / "lab", binaries)
        lab.up(clusters=3, nodes=1, progress=lambda _: None)
        replicas: list[Replica] = []
        try:
            replicas = [Replica(next(names), url, args.lease, workdir) for _ in range(3)]
            register(replicas[0].port, lab)
            clusters = {c.name for c in lab.clusters()}
            took = []
            for round_ in range(args.rounds):
                held = wait(partial(owners, replicas, clusters))
                victim_name = Counter(held.values()).most_common(1)[0][0]
                victim = next(r for r in replicas if r.name == victim_name)
                lost = sorted(c for c, r in held.items() if r == victim_name)
                survivors = [r for r in replicas if r is not victim]
                victim.kill()
                killed = time.monotonic()
                wait(partial(owners, survivors, clusters))
                took.append(time.monotonic() - killed)
                print(f"round {round_ + 1}: {', '.join(lost)} handed over in {took[-1]:.1f} s")
                replicas = [*survivors, Replica(next(names), url, args.lease, workdir)]
            print(
                f"lease {args.lease:.0f} s: handover after SIGKILL median "
                f"{statistics.median(took):.1f} s, max {max(took):.1f} s ({len(took)} rounds)"
            )
        finally:
            for replica in replicas:
                replica.stop()
            lab.down(progress=lambda _: None)


if __name__ == "__main__":
    main()
