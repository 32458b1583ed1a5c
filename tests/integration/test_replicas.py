"""Several `wharf server` replicas on one PostgreSQL share the controllers' work by leases:
each cluster (and the platform-wide work) is held by exactly one replica, shown in /metrics
and in the cluster's status; a replica killed with SIGKILL loses its clusters to the others
once its leases expire."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import fresh_postgres
from tests.integration.conftest import Api, ServerProcess, register_clusters, wait_for
from wharf.lab import Lab

LEASE_SECONDS = 4
RESYNC_SECONDS = 3600
HELD = re.compile(r'^wharf_lease_held\{lease="([^"]+)",replica="([^"]+)"\} 1\.0$', re.M)


@pytest.fixture(scope="module")
def replicas(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    with fresh_postgres() as url:
        servers = []
        for n in (1, 2, 3):
            workdir = tmp_path_factory.mktemp(f"replica{n}")
            server = ServerProcess(
                workdir,
                url,
                WHARF_REPLICA=f"r{n}",
                WHARF_LEASE_SECONDS=str(LEASE_SECONDS),
                WHARF_METRICS_PUBLIC="true",
                # Longer than any wait here: a change reaches the other replicas by NOTIFY
                # or not at all (a lease gained still looks at everything).
                WHARF_RESYNC_SECONDS=str(RESYNC_SECONDS),
            )
            servers.append(server)
        try:
            for server in servers:  # side by side: they migrate one empty database at once
                server.launch()
            for server in servers:
                server.wait_ready(timeout=300)  # three cold starts share the machine
            register_clusters(servers[0].login(), lab)
            yield servers
        finally:
            for server in servers:
                server.stop()


def _holders(servers: list[ServerProcess]) -> dict[str, list[str]]:
    """Each lease with the replicas that say they hold it (from their /metrics)."""
    held: dict[str, list[str]] = {}
    for server in servers:
        for lease, replica in HELD.findall(httpx.get(f"{server.url}/metrics", timeout=10).text):
            held.setdefault(lease, []).append(replica)
    return held


def _work(lab: Lab) -> set[str]:
    return {"platform", *(f"cluster/{c.name}" for c in lab.clusters())}


def _status_holders(api: Api) -> dict[str, str]:
    return {
        f"cluster/{c['metadata']['name']}": c["status"].get("heldBy", "")
        for c in api.ok("GET", "/api/v1/clusters")["items"]
    }


def _shared_once(servers: list[ServerProcess], work: set[str]) -> dict[str, str] | None:
    """Every lease held by exactly one replica (scrapes are one after another, so a lease
    handed over between two of them may show twice: that is looked at again, not a failure;
    fencing, in test_leases.py, is what keeps two from writing)."""
    held = _holders(servers)
    if set(held) != work or any(len(replicas) != 1 for replicas in held.values()):
        return None
    return {k: v[0] for k, v in held.items()}


def test_each_cluster_is_held_by_exactly_one_replica(
    replicas: list[ServerProcess], lab: Lab
) -> None:
    work = _work(lab)

    def split() -> dict[str, str] | None:
        held = _shared_once(replicas, work)
        # Shared out: with as many replicas as pieces of work, each holds one.
        return held if held and len(set(held.values())) == min(len(work), 3) else None

    held = wait_for(split, what="the work split between the replicas")
    api = replicas[1].login()
    wait_for(
        lambda: _status_holders(api) == {k: v for k, v in held.items() if k != "platform"},
        what="cluster status naming the replica that holds it",
    )


def test_a_write_taken_by_one_replica_reaches_the_clusters_the_others_hold(
    replicas: list[ServerProcess], lab: Lab, kubectl
) -> None:
    """The replica that takes a write wakes its own controllers; the replicas holding the
    clusters it concerns hear of it through PostgreSQL's NOTIFY (their resync is an hour)."""
    work = _work(lab)
    held = wait_for(lambda: _shared_once(replicas, work), what="every lease held")
    holders = {held[f"cluster/{c.name}"] for c in lab.clusters()}
    taker = next(s for s in replicas if s.env["WHARF_REPLICA"] not in holders)
    api = taker.login()
    tenant = f"t{uuid.uuid4().hex[:8]}"
    clusters = [c.name for c in lab.clusters()]
    tenant_spec = {"quota": {"cpu": "2", "memory": "2Gi"}, "clusters": clusters}
    api.ok(
        "PUT",
        f"/api/v1/tenants/{tenant}",
        json={"kind": "Tenant", "metadata": {"name": tenant}, "spec": tenant_spec},
    )
    project = {
        "kind": "Project",
        "metadata": {"name": "web"},
        "spec": {
            "quota": {"cpu": "1", "memory": "1Gi"},
            "environments": [{"name": "dev", "clusters": clusters}],
        },
    }
    api.ok("PUT", f"/api/v1/tenants/{tenant}/projects/web", json=project)
    namespace = f"{tenant}--web-dev"
    for cluster in lab.clusters():
        wait_for(
            lambda c=cluster: (
                kubectl(c, "get", "namespace", namespace, check=False).returncode == 0
            ),
            timeout=120,
            what=f"{namespace} in {cluster.name}, held by {held[f'cluster/{cluster.name}']}",
        )
    heard = {
        s.env["WHARF_REPLICA"]: re.search(
            r"^wharf_replica_changes_heard ([0-9.]+)$",
            httpx.get(f"{s.url}/metrics", timeout=10).text,
            re.M,
        )
        for s in replicas
    }
    for holder in holders:
        found = heard[holder]
        assert found is not None, heard
        assert float(found.group(1)) >= 2, heard  # the tenant and the project, at least


def test_a_killed_replica_loses_its_clusters_to_the_others(
    replicas: list[ServerProcess], lab: Lab, tmp_path: Path
) -> None:
    work = _work(lab)
    held = wait_for(lambda: _shared_once(replicas, work), what="every lease held")
    lease = "cluster/" + lab.clusters()[0].name
    victim = next(s for s in replicas if s.env["WHARF_REPLICA"] == held[lease])
    survivors = [s for s in replicas if s is not victim]
    victim.kill()
    killed = time.monotonic()

    def taken_over() -> dict[str, str] | None:
        now = _shared_once(survivors, work)
        return now if now and victim.env["WHARF_REPLICA"] not in now.values() else None

    # Bounded: the lease's time, a round of the keeper, and room for a loaded machine.
    after = wait_for(taken_over, timeout=LEASE_SECONDS * 6, what="the killed replica's work taken")
    took = time.monotonic() - killed
    print(f"handover after SIGKILL: {took:.1f}s (lease {LEASE_SECONDS}s)")
    api = survivors[0].login()
    wait_for(
        lambda: _status_holders(api)[lease] == after[lease],
        what="the cluster's status naming its new holder",
    )
