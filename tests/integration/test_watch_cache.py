"""Delivery reads and prunes from watch caches: what a cache holds, and that a cache which
missed changes (its watch down or being restarted) never deletes an object it did not see."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx2
import pytest
from lightkube.codecs import from_dict
from lightkube.resources.core_v1 import ConfigMap, ResourceQuota

from wharf.kube import async_client
from wharf.kube.apply import (
    MANAGED_BY,
    OwnedElsewhereError,
    apply_watched,
    dry_run,
    ensure_cached,
    prune_cached,
    prune_selected,
    seen_otherwise,
)
from wharf.kube.informer import Informer
from wharf.lab import Lab

OURS = {MANAGED_BY: "wharf", "wharf.io/app": "web"}


def config_map(name: str, namespace: str, labels: dict[str, str]) -> Any:
    return from_dict(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "data": {"k": "v"},
        }
    )


async def new_namespace(client: Any) -> str:
    namespace = f"cache-{uuid.uuid4().hex[:8]}"
    await client.apply(
        from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    )
    return namespace


async def test_a_stale_cache_prunes_nothing_it_did_not_see(lab: Lab) -> None:
    client = async_client(lab.cluster("lab1").kubeconfig)
    namespace = await new_namespace(client)
    for name in ("replaced", "relabelled", "left"):
        await client.apply(config_map(name, namespace, OURS), field_manager="wharf")
    cache = Informer(client, ConfigMap, labels={MANAGED_BY: "wharf"}, name="test")
    task = asyncio.create_task(cache.run())
    try:
        await asyncio.wait_for(cache.synced.wait(), 30)
        assert len(cache.in_namespace(namespace)) == 3  # listed once synced
        # The cache keeps what Wharf reads, not the server's bookkeeping.
        assert all("managedFields" not in o["metadata"] for o in cache.in_namespace(namespace))
    finally:
        task.cancel()  # the watch is down from here: the cache goes stale
    seen = cache.in_namespace(namespace)
    # Meanwhile: one object is deleted and made again by someone else under the same name,
    # another is taken by another application (same object, new labels).
    await client.delete(ConfigMap, "replaced", namespace=namespace)
    await client.apply(config_map("replaced", namespace, {"owner": "someone"}), field_manager="x")
    await client.apply(
        config_map("relabelled", namespace, {MANAGED_BY: "wharf", "wharf.io/app": "other"}),
        field_manager="wharf",
    )
    # Nothing is kept: the stale cache says all three are the application's to prune.
    removed = await prune_cached(client, seen, keep=set())
    assert removed == ["left"]
    replaced = await client.get(ConfigMap, "replaced", namespace=namespace)
    assert replaced.metadata is not None
    assert replaced.metadata.labels == {"owner": "someone"}
    relabelled = await client.get(ConfigMap, "relabelled", namespace=namespace)
    assert relabelled.metadata is not None
    assert relabelled.metadata.labels is not None
    assert relabelled.metadata.labels["wharf.io/app"] == "other"
    await client.close()


async def test_a_dry_run_tells_an_object_the_cache_did_not_see_as_it_is(lab: Lab) -> None:
    # Review of the caches: deletes were guarded, writes were not. An object made again by
    # someone else, or relabelled, while the watch was behind passed the owner check on the
    # cache's copy and was force-applied: taken over. The dry run each changed object gets
    # anyway says whether the cache saw it as it is; when not, delivery reads it first.
    client = async_client(lab.cluster("lab1").kubeconfig)
    namespace = await new_namespace(client)
    for name in ("replaced", "relabelled", "same"):
        await client.apply(config_map(name, namespace, OURS), field_manager="wharf")
    cache = Informer(client, ConfigMap, labels={MANAGED_BY: "wharf"}, name="test")
    task = asyncio.create_task(cache.run())
    try:
        await asyncio.wait_for(cache.synced.wait(), 30)
    finally:
        task.cancel()
    await client.delete(ConfigMap, "replaced", namespace=namespace)
    await client.apply(config_map("replaced", namespace, {"owner": "someone"}), field_manager="x")
    await client.apply(
        config_map("relabelled", namespace, {MANAGED_BY: "wharf", "wharf.io/app": "other"}),
        field_manager="wharf",
    )
    changed = {**config_map("x", namespace, OURS).to_dict(), "data": {"k": "changed"}}
    told = {}
    for name in ("replaced", "relabelled", "same", "new"):
        obj = {**changed, "metadata": {**changed["metadata"], "name": name}}
        told[name] = seen_otherwise(cache.get(namespace, name), await dry_run(client, obj))
    assert told == {"replaced": True, "relabelled": True, "same": False, "new": False}
    await client.close()


async def test_ensure_from_a_cache_asks_nothing_when_in_place_and_never_adopts(
    lab: Lab, monkeypatch
) -> None:
    """`ensure_cached` (placement and release steps): an object the cache holds as wanted
    costs no request; one the cache does not hold — another owner's, without Wharf's labels —
    is read from the cluster and refused, never taken over."""
    client = async_client(lab.cluster("lab1").kubeconfig)
    namespace = await new_namespace(client)
    await client.apply(config_map("theirs", namespace, {"owner": "someone"}), field_manager="x")
    cache = Informer(client, ConfigMap, labels={MANAGED_BY: "wharf"}, name="test")
    task = asyncio.create_task(cache.run())
    requests: list[str] = []
    send = httpx2.AsyncClient.send

    async def counted(self, request, *args, **kwargs):  # type: ignore[no-untyped-def]
        if "watch=" not in str(request.url.query):
            requests.append(f"{request.method} {request.url.path}")
        return await send(self, request, *args, **kwargs)

    try:
        await asyncio.wait_for(cache.synced.wait(), 30)
        monkeypatch.setattr(httpx2.AsyncClient, "send", counted)
        ours = config_map("ours", namespace, OURS).to_dict()
        wrote, _ = await ensure_cached(client, cache, ours, OURS)
        assert wrote
        assert len(requests) == 2
        requests.clear()
        wrote, current = await ensure_cached(client, cache, ours, OURS)
        assert not wrote
        assert current["metadata"]["name"] == "ours"
        assert requests == [], "an object in place was asked of the cluster"
        theirs = config_map("theirs", namespace, OURS).to_dict()
        with pytest.raises(OwnedElsewhereError):
            await ensure_cached(client, cache, theirs, OURS)
        assert [r.split()[0] for r in requests] == ["GET"], requests  # read, not written
        # Pruning from the cache: only what matches the selector (and only Wharf's).
        other = {MANAGED_BY: "wharf", "wharf.io/app": "other"}
        await client.apply(config_map("other", namespace, other), field_manager="wharf")
        await client.apply(config_map("gone", namespace, OURS), field_manager="wharf")
        for _ in range(100):
            if len(cache.in_namespace(namespace)) == 3:
                break
            await asyncio.sleep(0.1)
        requests.clear()
        removed = await prune_selected(client, cache, ConfigMap, namespace, OURS, {"ours"})
        assert removed == ["gone"]
        assert [r.split()[0] for r in requests] == ["DELETE"], requests  # no LIST
        left = {c.metadata.name async for c in client.list(ConfigMap, namespace=namespace)}
        assert {"ours", "other", "theirs"} <= left
        assert "gone" not in left
    finally:
        monkeypatch.setattr(httpx2.AsyncClient, "send", send)
        task.cancel()
        await client.close()


async def test_a_prune_from_a_stale_cache_still_removes_what_changed_but_is_still_selected(
    lab: Lab,
) -> None:
    """The cache saw an older version of an object that is still to be pruned (its watch was
    behind): the conditional delete fails, and the prune then decides on what the cluster holds
    now — a revoked member's binding is not left until something else looks again. What no
    longer matches (taken by another application) is still left alone."""
    client = async_client(lab.cluster("lab1").kubeconfig)
    namespace = await new_namespace(client)
    for name in ("edited", "taken"):
        await client.apply(config_map(name, namespace, OURS), field_manager="wharf")
    cache = Informer(client, ConfigMap, labels={MANAGED_BY: "wharf"}, name="test")
    task = asyncio.create_task(cache.run())
    try:
        await asyncio.wait_for(cache.synced.wait(), 30)
    finally:
        task.cancel()  # stale from here, but still holding both as they were
    edited = config_map("edited", namespace, {**OURS, "note": "edited-since"})
    await client.apply(edited, field_manager="wharf")
    taken = {MANAGED_BY: "wharf", "wharf.io/app": "other"}
    await client.apply(config_map("taken", namespace, taken), field_manager="wharf")
    removed = await prune_selected(client, cache, ConfigMap, namespace, OURS, set())
    assert removed == ["edited"]
    left = {c.metadata.name async for c in client.list(ConfigMap, namespace=namespace)}
    assert "taken" in left
    assert "edited" not in left
    await client.close()


async def test_the_echo_of_a_write_the_cache_remembered_wakes_nothing(lab: Lab) -> None:
    # Each write of Wharf's came back through the watch and queued its project or application
    # once more for nothing: seeding 1,000 projects left a second round of them queued as
    # changes, and a project's quota edit waited behind that round (bench/scale.py, half a
    # minute to a minute). A change made by someone else still wakes it.
    client = async_client(lab.cluster("lab1").kubeconfig)
    namespace = await new_namespace(client)
    told: list[tuple[str, str]] = []
    theirs_seen = asyncio.Event()

    def on_event(event: str, obj: dict[str, Any]) -> None:
        name = obj.get("metadata", {}).get("name", "")
        told.append((event, name))
        if name == "theirs":
            theirs_seen.set()

    cache = Informer(client, ConfigMap, labels={MANAGED_BY: "wharf"}, on_event=on_event)
    task = asyncio.create_task(cache.run())
    try:
        await asyncio.wait_for(cache.synced.wait(), 30)
        # Its answer and its echo through the watch come in either order.
        await apply_watched(client, cache, config_map("mine", namespace, OURS).to_dict())
        # Made after it, so its event comes after the echo of ours on the same watch.
        await client.apply(config_map("theirs", namespace, OURS), field_manager="someone")
        await asyncio.wait_for(theirs_seen.wait(), 30)
    finally:
        task.cancel()
    assert ("ADDED", "theirs") in told
    assert not [t for t in told if t[1] == "mine"], told
    assert cache.get(namespace, "mine") is not None
    await client.close()


async def test_the_clusters_count_of_a_quotas_use_is_told_apart_from_a_change(lab: Lab) -> None:
    # The lab's controller manager fills in a ResourceQuota's status after each write and
    # each pod: a placement reader takes that after the changes waiting (1,000 projects placed
    # had their quotas' counts queue a round of them as changes ahead of the next edit).
    client = async_client(lab.cluster("lab1").kubeconfig)
    namespace = await new_namespace(client)
    changes: list[tuple[str, str]] = []
    statuses: list[dict[str, Any]] = []
    counted = asyncio.Event()

    def on_event(event: str, obj: dict[str, Any]) -> None:
        if event in ("ADDED", "MODIFIED", "DELETED"):  # not the cache's SYNCED or ERROR
            changes.append((event, obj["spec"]["hard"]["count/configmaps"]))

    def on_status(_event: str, obj: dict[str, Any]) -> None:
        statuses.append(obj.get("status", {}))
        counted.set()

    cache = Informer(
        client,
        ResourceQuota,
        labels={MANAGED_BY: "wharf"},
        on_event=on_event,
        on_status=on_status,
    )
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "quota", "namespace": namespace, "labels": OURS},
        "spec": {"hard": {"count/configmaps": "5"}},
    }
    task = asyncio.create_task(cache.run())
    try:
        await asyncio.wait_for(cache.synced.wait(), 30)
        await apply_watched(client, cache, quota)  # its echo wakes nobody
        await asyncio.wait_for(counted.wait(), 60)  # the controller manager's count
        assert changes == [], changes
        assert statuses[-1]["hard"] == {"count/configmaps": "5"}
        # Someone else's edit of the quota itself is a change, told as one.
        quota["spec"]["hard"]["count/configmaps"] = "7"
        await client.apply(from_dict(quota), field_manager="someone", force=True)
        for _ in range(300):
            if changes:
                break
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
    assert changes[:1] == [("MODIFIED", "7")], changes
    await client.close()
