"""The controller runtime retries a failing key with back-off and says each new failure once."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable

from structlog.testing import capture_logs

from wharf.core.controller import Controller, cancel
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
