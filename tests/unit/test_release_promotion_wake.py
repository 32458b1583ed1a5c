"""A cluster's promotion waits for delivery to report the new revision Available there: it is
woken by delivery's status write, not by polling every 0.5 s (each poll a pass reading the
application, its release and its clusters)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from wharf.releases.controller import REDELIVER_EVERY, ReleaseController
from wharf.server.platform import Platform

KEY = ("acme", "web")


def test_a_waiting_promotion_is_woken_by_deliverys_status_write() -> None:
    asked: list[Any] = []
    controller = ReleaseController(
        cast(Any, None), cast(Any, None), cast(Any, None), None, asked.append
    )
    app = SimpleNamespace(status={"clusters": {"lab1": {"revision": 1, "state": "Available"}}})
    snap = cast(Any, SimpleNamespace(app=app, spec=SimpleNamespace(), deliveries=0))
    release = cast(Any, SimpleNamespace(revision=2, clusters={"lab1": {"phase": "Promoting"}}))

    async def run() -> float | None:
        wait = await controller._finish_promotion(KEY, snap, release, "lab1")
        controller.delivered(("acme", "other"))  # no promotion of its own waits
        assert len(controller.controller.queue) == 0
        controller.delivered(KEY)
        assert len(controller.controller.queue) == 1
        assert await controller.controller.queue.get() == KEY
        controller.delivered(KEY)  # once per wait
        assert len(controller.controller.queue) == 0
        await controller.stop()
        return wait

    assert asyncio.run(run()) == REDELIVER_EVERY  # a fallback, not the old 0.5 s poll
    assert asked == [KEY]  # delivery asked (at most every REDELIVER_EVERY)


def controller_for(asked: list[Any]) -> ReleaseController:
    return ReleaseController(cast(Any, None), cast(Any, None), cast(Any, None), None, asked.append)


def test_a_status_write_between_the_read_and_the_wait_is_not_missed() -> None:
    """Delivery reported while the pass ran (after it read the application): nobody waited
    for that wake-up yet, so the pass looks again at once instead of sleeping 5 s."""
    asked: list[Any] = []
    controller = controller_for(asked)
    app = SimpleNamespace(status={"clusters": {"lab1": {"revision": 1, "state": "Available"}}})
    snap = cast(Any, SimpleNamespace(app=app, spec=SimpleNamespace(), deliveries=0))
    release = cast(Any, SimpleNamespace(revision=2, clusters={"lab1": {"phase": "Promoting"}}))

    async def run() -> float | None:
        controller.delivered(KEY)  # delivery finished after the pass read the application
        wait = await controller._finish_promotion(KEY, snap, release, "lab1")
        await controller.stop()
        return wait

    assert asyncio.run(run()) == 0.0


def test_each_new_weight_asks_delivery_at_once_and_the_same_one_now_and_then() -> None:
    """A route that lacks a step's weight asks delivery to write it at once, even right after
    the previous step's ask; asking again for the same step is limited to every 5 s."""
    asked: list[Any] = []
    controller = controller_for(asked)

    async def run() -> None:
        controller._ask_delivery(KEY, ("lab1", 0, 20))
        controller._ask_delivery(KEY, ("lab1", 0, 20))
        controller._ask_delivery(KEY, ("lab1", 2, 50))
        await controller.stop()

    asyncio.run(run())
    assert asked == [KEY, KEY]


def test_a_pass_wait_replaces_the_one_before_it() -> None:
    """One timed look per release: a pass that an event caused sets the next look, and the
    earlier pass's timer goes (else each event would start one more chain of wake-ups)."""
    controller = controller_for([])

    async def run() -> None:
        controller._wake(KEY, 3600)
        first = controller._wakes[KEY]
        controller._wake(KEY, 0)
        assert first.cancelled()
        assert await controller.controller.queue.get() == KEY
        assert KEY not in controller._wakes
        controller._wake(KEY, 3600)
        controller._wake(KEY, None)  # waiting for an event only
        assert KEY not in controller._wakes
        await controller.stop()

    asyncio.run(run())


def test_the_platform_tells_the_release_controller_of_each_delivery(
    idle_platform: Platform,
) -> None:
    platform = idle_platform
    assert platform.delivery.delivered == [platform.releases.delivered]


def test_an_application_with_no_release_to_drive_leaves_nothing_behind() -> None:
    # Review of the event-driven steps: the per-application maps only grew, one entry for
    # every application ever delivered or released, deleted ones included.
    controller = ReleaseController(
        cast(Any, None), cast(Any, None), cast(Any, None), None, lambda _key: None
    )
    controller._load = lambda _key: None  # type: ignore[method-assign]

    async def run() -> None:
        controller.delivered(KEY)
        controller._ask_delivery(KEY, ("lab1", 2, 20))
        controller._awaiting.add(KEY)
        controller._wake(KEY, 60.0)
        await controller.reconcile(KEY)
        await controller.stop()

    asyncio.run(run())
    kept = (controller._deliveries, controller._asked, controller._nudged, controller._wakes)
    assert [dict(m) for m in kept] == [{}, {}, {}, {}]
    assert KEY not in controller._awaiting
