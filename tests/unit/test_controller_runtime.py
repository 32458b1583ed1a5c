"""The controller runtime retries a failing key with back-off and says each new failure once."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable
from typing import Any

from structlog.testing import capture_logs

from wharf.core.controller import Controller, WorkQueue, cancel
from wharf.core.leases import WORKING_UNDER, Lease, LeaseBook


def test_a_failure_repeated_at_each_retry_is_logged_once_and_a_new_one_again() -> None:
    errors = ["cluster away", "cluster away", "cluster away", "quota gone"]
    done = asyncio.Event()

    async def reconcile(key: Hashable) -> None:
        if errors:
            raise RuntimeError(errors.pop(0))
        done.set()

    async def keys() -> Iterable[Hashable]:
        return ["shop"]

    async def scenario() -> None:
        controller = Controller("test", reconcile, keys, resync=3600, workers=1, backoff=0.001)
        task = asyncio.get_running_loop().create_task(controller.run())
        try:
            async with asyncio.timeout(30):
                await done.wait()
        finally:
            await cancel([task])

    with capture_logs() as logs:
        asyncio.run(scenario())
    failed = [e for e in logs if e["event"] == "reconcile failed"]
    assert [(e["log_level"], e["error"]) for e in failed] == [
        ("warning", "RuntimeError: cluster away"),
        ("debug", "RuntimeError: cluster away"),
        ("debug", "RuntimeError: cluster away"),
        ("warning", "RuntimeError: quota gone"),
    ]
    assert [e["failures"] for e in failed] == [1, 2, 3, 4]


def test_a_key_failing_for_days_is_retried_every_30_s_and_never_stops_the_controller() -> None:
    """A key that fails a thousand times and more (a namespace that never comes, a cluster
    answering 404 to everything) keeps its back-off at 30 s; 2**1024 would overflow a float
    inside the failure handler and end every worker of the controller."""
    delays: list[float] = []

    async def reconcile(key: Hashable) -> None:
        raise RuntimeError("namespace not there")

    async def keys() -> Iterable[Hashable]:
        return []

    async def scenario() -> None:
        controller = Controller("test", reconcile, keys, resync=3600, workers=1)
        loop = asyncio.get_running_loop()
        real = loop.call_later

        def later(delay: float, *args: Any) -> asyncio.TimerHandle:
            delays.append(delay)
            return real(3600, *args)  # noted, not waited for

        loop.call_later = later  # type: ignore[method-assign, assignment]
        controller._failures["shop"] = 5000
        await controller._reconcile_once("shop")
        assert controller._failures["shop"] == 5001

    asyncio.run(scenario())
    assert delays == [30.0]


def test_a_key_is_reconciled_only_under_its_lease_which_travels_with_it() -> None:
    """With several replicas: keys whose lease another replica holds are left alone, and the
    reconcile of a held key sees its lease (what the database checks before writing)."""
    seen: dict[Hashable, Lease | None] = {}
    done = asyncio.Event()
    book = LeaseBook("r1")
    book.hold("cluster/mine", 7, float("inf"))

    async def reconcile(key: Hashable) -> None:
        seen[key] = WORKING_UNDER.get()
        done.set()

    async def keys() -> Iterable[Hashable]:
        return ["theirs", "mine"]

    async def scenario() -> None:
        controller = Controller("test", reconcile, keys, resync=3600, workers=1)
        controller.lease_for = lambda key: book.lease(f"cluster/{key}")
        task = asyncio.get_running_loop().create_task(controller.run())
        try:
            async with asyncio.timeout(30):
                await done.wait()
            await controller.idle()
        finally:
            await cancel([task])

    asyncio.run(scenario())
    assert seen == {"mine": Lease("cluster/mine", "r1", 7)}
    assert WORKING_UNDER.get() is None


def test_a_key_queued_while_it_is_reconciled_waits_for_it_and_runs_once_more() -> None:
    """Client-go's way: a key queued N times during its reconcile is not handed to another
    worker (which used to sleep 50 ms and queue it again, over and over) but marked dirty and
    queued once when the reconcile finishes."""
    handed: list[Hashable] = []
    runs: list[Hashable] = []
    shop_started = asyncio.Event()
    release_shop = asyncio.Event()
    other_done = asyncio.Event()
    shop_again = asyncio.Event()

    async def reconcile(key: Hashable) -> None:
        runs.append(key)
        if key == "shop" and runs.count("shop") == 1:
            shop_started.set()
            await release_shop.wait()
        elif key == "shop":
            shop_again.set()
        if key == "other":
            other_done.set()

    async def keys() -> Iterable[Hashable]:
        return []

    async def scenario() -> None:
        controller = Controller("test", reconcile, keys, resync=3600, workers=2)
        get = controller.queue.get

        async def counted() -> Hashable:
            key = await get()
            handed.append(key)
            return key

        controller.queue.get = counted  # type: ignore[method-assign]
        task = asyncio.get_running_loop().create_task(controller.run())
        try:
            async with asyncio.timeout(30):
                controller.queue.add("shop")
                await shop_started.wait()
                for _ in range(5):
                    controller.queue.add("shop")
                    await asyncio.sleep(0)
                controller.queue.add("other")  # the free worker takes it, not "shop" again
                await other_done.wait()
                release_shop.set()
                await shop_again.wait()
                await controller.idle()
        finally:
            await cancel([task])

    asyncio.run(scenario())
    assert handed == ["shop", "other", "shop"]
    assert runs == ["shop", "other", "shop"]


def test_the_resync_takes_its_keys_from_resync_keys_and_queue_all_from_list_keys() -> None:
    """A controller whose events cover most changes resyncs fewer keys; something all keys
    depend on (queue_all) and the first pass at the start still look at every one."""
    seen: list[Hashable] = []
    resynced, swept = asyncio.Event(), asyncio.Event()

    async def reconcile(key: Hashable) -> None:
        seen.append(key)
        if seen.count("unsettled") >= 4:
            resynced.set()
        if seen.count("settled") >= 2:
            swept.set()

    async def every() -> Iterable[Hashable]:
        return ["settled", "unsettled"]

    async def unsettled() -> Iterable[Hashable]:
        return ["unsettled"]

    async def scenario() -> None:
        controller = Controller(
            "test", reconcile, every, resync=0.05, workers=1, resync_keys=unsettled
        )
        task = asyncio.get_running_loop().create_task(controller.run())
        try:
            async with asyncio.timeout(30):
                await resynced.wait()
            assert seen.count("settled") == 1, seen  # the pass at the start only
            controller.queue_all()
            async with asyncio.timeout(30):
                await swept.wait()
        finally:
            await cancel([task])

    asyncio.run(scenario())


def test_a_changed_key_goes_before_the_keys_a_sweep_queued() -> None:
    """A project edited while a sweep of a thousand projects is queued is reconciled next,
    not after the thousand (measured: a quota edit took a minute to reach its clusters)."""
    seen: list[Hashable] = []
    edited, started = asyncio.Event(), asyncio.Event()

    async def reconcile(key: Hashable) -> None:
        seen.append(key)
        if len(seen) == 3:
            started.set()
        if key == "edited":
            edited.set()
        await asyncio.sleep(0.001)

    async def every() -> Iterable[Hashable]:
        return [f"p{i:03d}" for i in range(200)]

    async def scenario() -> None:
        controller = Controller("test", reconcile, every, resync=3600, workers=1)
        task = asyncio.get_running_loop().create_task(controller.run())
        try:
            async with asyncio.timeout(30):
                await started.wait()  # the pass at the start is under way
            controller.queue.add("edited")
            async with asyncio.timeout(30):
                await edited.wait()
        finally:
            await cancel([task])

    asyncio.run(scenario())
    assert seen.index("edited") <= 5, seen[:10]


def test_a_sweep_is_never_held_up_for_good_by_changes_and_a_change_keeps_its_place() -> None:
    async def scenario() -> None:
        queue = WorkQueue()
        for key in ("s1", "s2", "s3"):
            queue.add(key, later=True)
        queue.add("s2")  # changed while swept: now a change, queued once
        for key in ("c1", "c2", "c3", "c4", "c5"):
            queue.add(key)
        handed = [await queue.get() for _ in range(len(queue))]
        # Changes first, in order, with every fourth key handed out a swept one.
        assert handed == ["s2", "c1", "c2", "s1", "c3", "c4", "c5", "s3"]
        for key in handed:
            queue.done(key)
        # A key handed out, then swept and changed meanwhile, comes back as a change.
        queue.add("a", later=True)
        queue.add("b", later=True)
        a = await queue.get()
        queue.add(a, later=True)
        queue.add(a)
        queue.add("c")
        queue.done(a)
        assert [await queue.get() for _ in range(3)] == ["c", "a", "b"]

    asyncio.run(scenario())


def test_a_pass_for_what_every_key_depends_on_waits_behind_no_sweep() -> None:
    """queue_all (a user disabled, a cluster gone, a lease taken over) is a change: the hostile
    review found a revocation or a failover queued behind the periodic pass, at a quarter of
    the workers."""
    seen: list[Hashable] = []
    calls = 0
    revoked, started = asyncio.Event(), asyncio.Event()

    async def reconcile(key: Hashable) -> None:
        seen.append(key)
        if len(seen) == 3:
            started.set()
        if key == "revoked":
            revoked.set()
        await asyncio.sleep(0.001)

    async def every() -> Iterable[Hashable]:
        nonlocal calls
        calls += 1
        return [f"p{i:03d}" for i in range(200)] if calls == 1 else ["revoked"]

    async def scenario() -> None:
        controller = Controller("test", reconcile, every, resync=3600, workers=1)
        task = asyncio.get_running_loop().create_task(controller.run())
        try:
            async with asyncio.timeout(30):
                await started.wait()
            controller.queue_all()
            async with asyncio.timeout(30):
                await revoked.wait()
        finally:
            await cancel([task])

    asyncio.run(scenario())
    assert seen.index("revoked") <= 6, seen[:10]


def test_a_status_refresh_asked_in_a_burst_is_queued_once_after_its_delay() -> None:
    async def scenario() -> None:
        queue = WorkQueue()
        for _ in range(50):  # a quota's count changing with each pod of a burst
            queue.add_after("project", 0.2)
        queue.add_after("other", 0.2)
        assert len(queue) == 2  # waiting counts as queued (Controller.idle waits for it)
        await asyncio.sleep(0)
        assert not queue._pending
        assert not queue._later
        async with asyncio.timeout(30):
            handed = {await queue.get(), await queue.get()}
        assert handed == {"project", "other"}
        for key in handed:
            queue.done(key)
        assert len(queue) == 0
        # Asked again once due: queued again (a later count is not lost).
        queue.add_after("project", 0.05)
        async with asyncio.timeout(30):
            assert await queue.get() == "project"

    asyncio.run(scenario())
