"""Requests to one cluster: at most `IN_FLIGHT` at once, each holding its slot until its
response is read, watches aside; a request that finds no slot gives up after its pool
timeout instead of waiting for good."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx2
import pytest
import yaml
from lightkube.codecs import from_dict
from lightkube.resources.core_v1 import ConfigMap, Namespace

from wharf.kube import async_client, server_version
from wharf.kube.clients import IN_FLIGHT, BoundedTransport
from wharf.kube.connections import ClusterConnections
from wharf.kube.kubeconfig import AddressPolicy
from wharf.lab import Lab


def _transport(client: Any) -> BoundedTransport:
    transport = client._client._client._transport
    assert isinstance(transport, BoundedTransport)
    return transport


async def test_a_burst_of_requests_opens_no_more_connections_than_slots(lab: Lab) -> None:
    client = async_client(lab.cluster("lab1").kubeconfig, timeout=60)
    try:
        # 100 at once: without the slots each opens a connection of its own.
        found = await asyncio.gather(*(client.get(Namespace, "default") for _ in range(100)))
        assert {n.metadata.name for n in found} == {"default"}
        connections = _transport(client)._pool.connections
        assert 0 < len(connections) <= IN_FLIGHT, len(connections)
    finally:
        await client.close()


async def test_watches_take_no_slot(lab: Lab) -> None:
    client = async_client(lab.cluster("lab1").kubeconfig, timeout=5, in_flight=2)
    namespace = f"slots-{uuid.uuid4().hex[:8]}"
    await client.create(Namespace(metadata={"name": namespace}))  # type: ignore[arg-type]
    await client.create(
        from_dict(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "seen", "namespace": namespace},
            }
        )
    )
    opened = [asyncio.Event() for _ in range(4)]

    async def watch(event: asyncio.Event) -> None:
        async for _ in client.watch(ConfigMap, namespace=namespace):
            event.set()

    watches = [asyncio.create_task(watch(e)) for e in opened]
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(e.wait() for e in opened))
        # Twice the slots are held open by watches: a request still gets one at once.
        found = await client.get(ConfigMap, "seen", namespace=namespace)
        assert found.metadata is not None
        assert found.metadata.name == "seen"
    finally:
        for task in watches:
            task.cancel()
        await asyncio.gather(*watches, return_exceptions=True)
        await client.delete(Namespace, namespace)
        await client.close()


async def test_a_request_waits_for_a_slot_until_its_pool_timeout(lab: Lab) -> None:
    client = async_client(lab.cluster("lab1").kubeconfig, timeout=2, in_flight=1)
    http = client._client._client
    try:
        async with http.stream("GET", "/api/v1/namespaces/default") as held:
            assert held.status_code == 200
            # The only slot is held until that response is closed.
            started = time.monotonic()
            with pytest.raises(httpx2.PoolTimeout, match="no free slot among 1 requests"):
                await client.get(Namespace, "default")
            assert time.monotonic() - started >= 1.5
        # Closed: the slot is free again, and each request gives it back.
        for _ in range(3):
            found = await client.get(Namespace, "default")
            assert found.metadata is not None
            assert found.metadata.name == "default"
    finally:
        await client.close()


async def test_the_heartbeats_probe_waits_for_no_slot(lab: Lab) -> None:
    """A cluster busy with a burst of delivery (every slot taken, more waiting) still answers
    its heartbeat: the probe waiting behind them timed out and called the cluster
    Unreachable, which moves its replicas away (failover)."""
    client = async_client(lab.cluster("lab1").kubeconfig, timeout=2, in_flight=1)
    http = client._client._client
    try:
        async with http.stream("GET", "/api/v1/namespaces/default") as held:
            assert held.status_code == 200
            assert (await server_version(client)).startswith("v1.")
    finally:
        await client.close()


async def test_a_users_reads_take_no_slot_of_the_controllers(lab: Lab) -> None:
    """Logs are read on a user's behalf: with the controllers' client, a tenant reading the
    logs of many pods at once held the slots delivery and placement need on that cluster."""
    connections = ClusterConnections(AddressPolicy(allow_loopback=True))
    kubeconfig = yaml.safe_load(lab.cluster("lab1").kubeconfig.read_text())
    controllers = connections.client("lab1", kubeconfig)
    logs = connections.client("lab1", kubeconfig, purpose="logs")
    assert logs is not controllers
    assert connections.client("lab1", kubeconfig, purpose="logs") is logs
    assert _transport(logs)._slots is not _transport(controllers)._slots
    await connections.forget("lab1")  # a cluster leaving closes both
    assert connections.cached("lab1") is None
    assert connections.client("lab1", kubeconfig, purpose="logs") is not logs
    await connections.close()
