"""A cluster's promotion waits for delivery to report the new revision Available there: it is
woken by delivery's status write, not by polling every 0.5 s (each poll a pass reading the
application, its release and its clusters)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from wharf.core.config import Settings
from wharf.releases.controller import REDELIVER_EVERY, ReleaseController
from wharf.server.platform import Platform
from wharf.store import Database, migrate

KEY = ("acme", "web")


def test_a_waiting_promotion_is_woken_by_deliverys_status_write() -> None:
    asked: list[Any] = []
    controller = ReleaseController(
        cast(Any, None), cast(Any, None), cast(Any, None), None, asked.append
    )
    app = SimpleNamespace(status={"clusters": {"lab1": {"revision": 1, "state": "Available"}}})
    snap = cast(Any, SimpleNamespace(app=app, spec=SimpleNamespace()))
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


def test_the_platform_tells_the_release_controller_of_each_delivery(
    database_url: str, tmp_path: Path
) -> None:
    db = Database(database_url)
    migrate(db)
    settings = Settings(
        database_url=database_url,
        secret_key="unit-test-key",
        controllers=False,
        alert_receiver_token_file=tmp_path / "receiver-token",
    )
    platform = Platform(settings, db)
    assert platform.delivery.delivered == [platform.releases.delivered]
    db.dispose()
