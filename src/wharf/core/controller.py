"""The controller runtime: a de-duplicating work queue, workers, periodic resync, backoff.

Level-triggered: an event only says *which* object to look at; the reconcile function reads
the desired and observed state afresh each time, so a lost or repeated event does no harm.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any

import structlog

from wharf.core.leases import WORKING_UNDER, Lease

log = structlog.get_logger("wharf.controller")


# How long a status-only change (see WorkQueue.add_after) waits to be looked at, at most.
STATUS_REFRESH_SECONDS = 1.0


class WorkQueue:
    """Keys waiting to be reconciled; a key queued twice is reconciled once.

    As client-go's work queue: a key handed out is being processed until `done`; queued again
    meanwhile it is marked dirty, not handed to a second worker, and queued once when its
    reconcile finishes (however often it was queued in between).

    A key queued by a change goes before the keys a resync or sweep queued (`later`): with a
    thousand projects, a sweep's keys took a minute to work through, and a project edited
    meanwhile waited behind all of them. Every LATER_TURN-th key handed out is a swept one
    while both wait, so a steady stream of changes never holds a sweep up for good."""

    LATER_TURN = 4

    def __init__(self) -> None:
        self._pending: dict[Hashable, None] = {}  # queued by a change, in order
        self._later: dict[Hashable, None] = {}  # queued by a sweep, in order
        self._dirty: dict[Hashable, bool] = {}  # queued since handed out: by a change?
        self.processing: set[Hashable] = set()
        self._waiting: set[Hashable] = set()  # queued soon by `add_after`
        self._event = asyncio.Event()
        self._turn = 0

    def add(self, key: Hashable, later: bool = False) -> None:
        if key in self.processing:
            # Queued again when its reconcile is done (as a change if any add was one).
            self._dirty[key] = self._dirty.get(key, False) or not later
            return
        if not later:
            self._later.pop(key, None)
            self._pending[key] = None
        elif key not in self._pending:
            self._later[key] = None
        self._event.set()

    def add_after(self, key: Hashable, seconds: float) -> None:
        """Queue `key` (as a sweep's) in `seconds`, once however often asked meanwhile: for
        what only refreshes a status shown (a quota's count, a pod starting), which in a burst
        reconciled its key back to back (delivering 50 applications placed their project
        again for each pod that counted against its quota)."""
        if key in self._waiting:
            return
        self._waiting.add(key)

        def due() -> None:
            self._waiting.discard(key)
            self.add(key, later=True)

        asyncio.get_running_loop().call_later(seconds, due)

    async def get(self) -> Hashable:
        while not (self._pending or self._later):
            self._event.clear()
            await self._event.wait()
        self._turn += 1
        swept = not self._pending or (self._later and self._turn % self.LATER_TURN == 0)
        source = self._later if swept else self._pending
        key = next(iter(source))
        del source[key]
        self.processing.add(key)
        return key

    def done(self, key: Hashable) -> None:
        """The key's reconcile finished: queue it again if it was queued meanwhile."""
        self.processing.discard(key)
        if key in self._dirty:
            self.add(key, later=not self._dirty.pop(key))

    def __len__(self) -> int:
        return len(self._pending) + len(self._later) + len(self._dirty) + len(self._waiting)


class Controller:
    """Runs `reconcile(key)` for queued keys; all keys from `list_keys` every `resync` s (or
    those from `resync_keys`, when given: a controller whose events cover most changes may
    look again at fewer keys each time)."""

    def __init__(
        self,
        name: str,
        reconcile: Callable[[Any], Awaitable[None]],
        list_keys: Callable[[], Awaitable[Iterable[Hashable]]],
        resync: float = 30.0,
        workers: int = 2,
        backoff: float = 0.5,
        resync_keys: Callable[[], Awaitable[Iterable[Hashable]]] | None = None,
    ) -> None:
        self.name = name
        self.reconcile = reconcile
        self.list_keys = list_keys
        self.resync_keys = resync_keys
        self.resync = resync
        self.workers = workers
        self.backoff = backoff  # the first retry's delay; it doubles up to 30 s
        self.queue = WorkQueue()
        self._failures: dict[Hashable, int] = {}
        self._last_error: dict[Hashable, str] = {}
        self.reconciles = 0
        self._background: set[asyncio.Task[None]] = set()
        # With several replicas: the lease a key's work needs; None when this replica does
        # not hold it (the key is left to the replica that does). Unset: every key is ours.
        self.lease_for: Callable[[Hashable], Lease | None] | None = None

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()  # never a key another worker is reconciling
            try:
                await self._reconcile_once(key)
            finally:
                self.queue.done(key)

    async def _reconcile_once(self, key: Hashable) -> None:
        lease = self.lease_for(key) if self.lease_for is not None else None
        if self.lease_for is not None and lease is None:
            return  # another replica's work; the lease's new holder queues it
        working_under = WORKING_UNDER.set(lease)
        try:
            await self.reconcile(key)
            self._failures.pop(key, None)
            self._last_error.pop(key, None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(key, exc)
        finally:
            WORKING_UNDER.reset(working_under)
            self.reconciles += 1

    def _failed(self, key: Hashable, exc: Exception) -> None:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        # The exponent is capped: a key that fails for days must not overflow the float.
        delay = min(30.0, self.backoff * 2 ** min(failures, 16))
        error = f"{type(exc).__name__}: {exc}"
        # A new failure is news; the same one again at each retry is not.
        report = log.debug if self._last_error.get(key) == error else log.warning
        self._last_error[key] = error
        report(
            "reconcile failed",
            controller=self.name,
            key=str(key),
            error=error,
            retry_in=delay,
            failures=failures,
        )
        asyncio.get_running_loop().call_later(delay, self.queue.add, key)

    async def _enqueue_all(self, resync: bool = False, later: bool = True) -> None:
        keys = self.resync_keys if resync and self.resync_keys is not None else self.list_keys
        try:
            for key in await keys():
                self.queue.add(key, later=later)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("listing keys failed", controller=self.name, error=str(exc))

    def queue_all(self) -> None:
        """Look at every object soon (something they all depend on changed)."""
        # A change, not a sweep: something every key depends on (a user disabled, a cluster
        # gone, a lease taken over), so a revocation or a failover waits behind no sweep.
        task = asyncio.get_running_loop().create_task(self._enqueue_all(later=False))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _resync(self) -> None:
        await self._enqueue_all()  # everything once at the start
        while True:
            await asyncio.sleep(self.resync)
            await self._enqueue_all(resync=True)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._resync())
            for _ in range(self.workers):
                group.create_task(self._worker())

    async def idle(self) -> None:
        """Wait until nothing is queued or running (callers bound it with asyncio.timeout)."""
        while self.queue or self.queue.processing:  # noqa: ASYNC110 - a test aid, polling is fine
            await asyncio.sleep(0.05)


async def cancel(tasks: Iterable[asyncio.Task[Any]]) -> None:
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
