"""The schedule controller: an application's scheduled window applied when it opens and
reverted when it closes.

It records the window open now in the application's status (`status.schedule`) and hands the
application to delivery, which renders the autoscaler's bounds from that record. The clock is
injected, so that tests drive it through a schedule instead of waiting for one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import structlog

from wharf.apps.model import APPLICATION, ApplicationSpec
from wharf.core.controller import Controller
from wharf.core.errors import OutdatedSpecError
from wharf.resources.service import ResourceService
from wharf.scaling.model import schedule_status, stamped
from wharf.store.resources import ResourceStore, StoredResource

log = structlog.get_logger("wharf.scaling")
Key = tuple[str, str]  # (tenant, application)
Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ScheduleController:
    def __init__(
        self,
        service: ResourceService,
        redeliver: Callable[[Hashable], None],
        clock: Clock = utc_now,
        resync: float = 15.0,
    ) -> None:
        self.service = service
        self.redeliver = redeliver
        self.clock = clock
        # Windows open and close on the minute; a resync well inside one finds each change.
        self.controller = Controller("schedules", self.reconcile, self.list_keys, resync=resync)

    async def list_keys(self) -> Iterable[Key]:
        def scheduled() -> list[Key]:
            with self.service.db.reader() as session:
                apps = ResourceStore(session).query("Application")
                return [(a.tenant, a.name) for a in apps if _has_schedule(a)]

        return await asyncio.to_thread(scheduled)

    async def reconcile(self, key: Key) -> None:
        if await asyncio.to_thread(self._record, key, self.clock()):
            self.redeliver(key)

    def _record(self, key: Key, now: dt.datetime) -> bool:
        """Write the window open at `now` into the status; True when it changed."""
        # Every change of every application queues it here: most have no window to record,
        # and a read tells so without a turn at the write lock (see Database.session).
        with self.service.db.reader() as session:
            current = ResourceStore(session).get("Application", key[0], key[1])
        if current is None:
            return False
        if _wanted(current, current.status.get("schedule"), now) == current.status.get("schedule"):
            return False
        changed = False

        def build(stored: StoredResource) -> dict[str, Any]:
            nonlocal changed
            before = stored.status.get("schedule")
            wanted = _wanted(stored, before, now)
            changed = wanted != before
            status = {k: v for k, v in stored.status.items() if k != "schedule"}
            return {**status, "schedule": wanted} if wanted is not None else status

        stored = self.service.write_status("Application", key[0], key[1], build)
        if changed and stored is not None:
            log.info("scheduled window", app=key, schedule=stored.status.get("schedule"))
        return changed


def _has_schedule(app: StoredResource) -> bool:
    """It lists windows, or its status still shows one (to be cleared)."""
    spec = _spec(app)
    return bool(spec and spec.autoscaling and spec.autoscaling.schedules) or (
        "schedule" in app.status
    )


def _spec(stored: StoredResource) -> ApplicationSpec | None:
    try:
        return APPLICATION.typed(stored)
    except OutdatedSpecError:
        return None  # delivery says so on the application; nothing is scheduled meanwhile


def _wanted(
    stored: StoredResource, before: dict[str, Any] | None, now: dt.datetime
) -> dict[str, Any] | None:
    spec = _spec(stored)
    windows = spec.autoscaling.schedules if spec and spec.autoscaling else []
    if not windows:
        return None
    return stamped(schedule_status(windows, now), before, now)
