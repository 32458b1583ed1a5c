"""The lease keeper: takes, renews and shares out this replica's leases, a few times a lease.

Work is shared fairly: each live replica (one that renews its `replica/<name>` row) holds at
most ceil(work / replicas) leases; one holding more gives the rest back, so a replica that
joins gets its share within a round or two. A replica that dies stops renewing; its leases
expire after `seconds` and the others take them at their next round.
On SQLite there is one process, and it holds every lease without asking the database.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import structlog
from sqlalchemy.orm import Session

from wharf.core.leases import CLUSTER_PREFIX, PLATFORM, LeaseBook, cluster_lease
from wharf.store import Database
from wharf.store.leases import REPLICA_PREFIX, Holding, holdings, release, take
from wharf.store.resources import ResourceStore

log = structlog.get_logger("wharf.leases")
# A lease counts as held by this process until this share of its time since the renewal
# began: the rest is the margin for clocks and pauses (see wharf.core.leases).
VALID_SHARE = 0.8


class LeaseKeeper:
    def __init__(
        self,
        db: Database,
        book: LeaseBook,
        seconds: float,
        gained: Callable[[str], None],
    ) -> None:
        self.db = db
        self.book = book
        self.seconds = seconds
        self.gained = gained
        self.holders: dict[str, str] = {}  # every lease's holder, as last seen (for status)

    @staticmethod
    def work(session: Session) -> list[str]:
        """Every piece of work to hold: the platform-wide controllers, and each cluster."""
        store = ResourceStore(session)
        clusters = store.query("Cluster") + store.query("Cluster", deleting=True)
        return [PLATFORM, *sorted({cluster_lease(c.name) for c in clusters})]

    def round(self) -> list[str]:
        """One round of taking and renewing; the leases new to this replica."""
        if self.book.sole:
            with self.db.reader() as session:
                work = self.work(session)
            self.holders = dict.fromkeys(work, self.book.holder)
            return [n for n in work if self.book.hold(n, 0, math.inf)]
        started = time.monotonic()
        me = self.book.holder
        # All of it on the leases' own connections: reads too, which the API's readers could
        # otherwise keep waiting until the leases lapsed.
        with self.db.control() as session:
            work = self.work(session)
            take(session, REPLICA_PREFIX + me, me, self.seconds)
            current = {h.name: h for h in holdings(session)}
            replicas = sum(1 for n in current if n.startswith(REPLICA_PREFIX))
            fair = math.ceil(len(work) / max(replicas, 1))
            mine = [n for n in work if _held_by(current.get(n), me)]
            excess = mine[fair:]
            for name in excess:
                self.book.drop(name)  # stop working under it before giving it back
            release(session, excess, me)
            wanted = mine[:fair] + [n for n in work if n not in current][: max(0, fair - len(mine))]
            epochs = {n: take(session, n, me, self.seconds) for n in wanted}
        self.holders = {n: h.holder for n, h in current.items() if n in work}
        until = started + self.seconds * VALID_SHARE
        new = []
        for name in work:
            epoch = epochs.get(name)
            if epoch is None:
                self.book.drop(name)
                continue
            self.holders[name] = me
            if self.book.hold(name, epoch, until):
                new.append(name)
        return new

    async def run(self) -> None:
        while True:
            try:
                for name in await asyncio.to_thread(self.round):
                    log.info("lease taken", lease=name, replica=self.book.holder)
                    self.gained(name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away: leases lapse, work stops, retry
                log.warning("lease round failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.seconds / 4)

    def give_back(self) -> None:
        """A clean stop: hand every lease over at once rather than after it expires."""
        if self.book.sole:
            return
        names = self.book.names()
        for name in names:
            self.book.drop(name)
        with self.db.control() as session:
            release(session, [*names, REPLICA_PREFIX + self.book.holder], self.book.holder)

    def cluster_holder(self, cluster: str) -> str | None:
        return self.holders.get(CLUSTER_PREFIX + cluster)


def _held_by(holding: Holding | None, holder: str) -> bool:
    return holding is not None and holding.holder == holder
