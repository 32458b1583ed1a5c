"""What a request to a cluster costs Wharf's client: Wharf's client (at most IN_FLIGHT
requests in flight, watches aside) next to the same client without that bound (what it was:
a pool of 100 connections, every request let through), in the same run on one lab cluster.

Each round applies 100 ConfigMaps at once (server-side apply) while 20 watches stay open, as
the controllers' informers keep theirs; it prints applies per second and the client's CPU
per request (user + system time of this process).

    uv run python bench/cluster_requests.py [--rounds 8] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
from lightkube import AsyncClient
from lightkube.codecs import from_dict
from lightkube.config.client_adapter import verify_cluster
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.core_v1 import ConfigMap

from wharf.kube import async_client
from wharf.kube.clients import FIELD_MANAGER, IN_FLIGHT, POOL
from wharf.lab import Lab, find_binaries

AT_ONCE = 100
WATCHES = 20


def unbounded(kubeconfig: Path) -> AsyncClient:
    """Wharf's client as it was: the same pool, no slots."""
    config = KubeConfig.from_file(kubeconfig).get()
    assert config.user is not None
    transport = httpx2.AsyncHTTPTransport(
        verify=verify_cluster(config.cluster, config.user, config.abs_file), limits=POOL
    )
    return AsyncClient(
        config, field_manager=FIELD_MANAGER, timeout=httpx2.Timeout(60), transport=transport
    )


def cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


async def watch(client: AsyncClient) -> None:
    async for _ in client.watch(ConfigMap, namespace="kube-system"):
        pass


async def run(client: AsyncClient, rounds: int, tag: str) -> tuple[float, float]:
    watches = [asyncio.create_task(watch(client)) for _ in range(WATCHES)]
    await asyncio.sleep(1)
    started, used = time.perf_counter(), cpu()

    async def apply(i: int, r: int) -> None:
        obj: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"bench-{i}", "namespace": "default"},
            "data": {"round": f"{tag}-{r}"},
        }
        await client.apply(from_dict(obj), force=True)

    for r in range(rounds):
        await asyncio.gather(*(apply(i, r) for i in range(AT_ONCE)))
    elapsed, used = time.perf_counter() - started, cpu() - used
    for task in watches:
        task.cancel()
    await asyncio.gather(*watches, return_exceptions=True)
    await client.close()
    count = rounds * AT_ONCE
    return count / elapsed, 1000 * used / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("build the lab first: uv run wharf lab build")
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(Path(tmp) / "lab", binaries)
        lab.up(clusters=1, nodes=1, progress=lambda _: None)
        try:
            kubeconfig = lab.clusters()[0].kubeconfig
            for _ in range(args.repeat):
                plain = asyncio.run(run(unbounded(kubeconfig), args.rounds, "plain"))
                rows.append(("without the bound (baseline)", *plain))
                ours = async_client(kubeconfig, timeout=60)
                rows.append(
                    (f"at most {IN_FLIGHT} in flight", *asyncio.run(run(ours, args.rounds, "ours")))
                )
        finally:
            lab.down(progress=lambda _: None)
    print(f"{AT_ONCE} server-side applies at once, {WATCHES} watches open, one lab cluster")
    print(f"{'client':<32}{'applies/s':>10}{'client CPU ms/request':>24}")
    for label, rate, per_request in rows:
        print(f"{label:<32}{rate:>10.0f}{per_request:>24.2f}")


if __name__ == "__main__":
    main()
