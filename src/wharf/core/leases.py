"""Leases: which replica does which piece of controller work, as this process knows it.

When several `wharf server` processes share one PostgreSQL, each piece of work (a cluster's,
or the platform-wide controllers') is done by the one replica holding its lease. The book
below is this process's view: what it holds, with which epoch, and until when by its own
monotonic clock. A lease counts as held only until a safety margin before it could expire in
the database, so a replica paused past its lease stops itself before another may start.

The lease a reconcile works under travels in a context variable, into the threads that write
to the database, where the write checks the epoch (fencing; see wharf.store.leases).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

PLATFORM = "platform"  # the controllers whose work spans clusters (projects, applications)
CLUSTER_PREFIX = "cluster/"


def cluster_lease(cluster: str) -> str:
    return CLUSTER_PREFIX + cluster


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    epoch: int
    fenced: bool = True  # writes check the epoch in the database (not on SQLite)


# The lease the running reconcile works under (None outside a reconcile).
WORKING_UNDER: ContextVar[Lease | None] = ContextVar("wharf_lease", default=None)
# More leases a write must still hold: a project's or application's status carries the parts
# of several clusters, each written under that cluster's lease.
FENCED_BY: ContextVar[tuple[Lease, ...]] = ContextVar("wharf_fenced_by", default=())


@contextmanager
def fenced_by(*leases: Lease) -> Iterator[None]:
    """Database writes in this block (and the threads it starts) hold all of `leases`."""
    token = FENCED_BY.set(tuple(sorted(leases, key=lambda lease: lease.name)))
    try:
        yield
    finally:
        FENCED_BY.reset(token)


def fences() -> list[Lease]:
    """The leases a write made now must still hold (fenced ones only)."""
    under = WORKING_UNDER.get()
    found = {lease.name: lease for lease in FENCED_BY.get() if lease.fenced}
    if under is not None and under.fenced:
        found.setdefault(under.name, under)
    return [found[name] for name in sorted(found)]


class LeaseLost(Exception):
    """This replica no longer holds the lease it worked under: its write is refused."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(
            f"lease {lease.name} (epoch {lease.epoch}) is no longer held by {lease.holder}"
        )
        self.lease = lease


class LeaseBook:
    """What this process holds. `sole` (SQLite, one process): everything, always."""

    def __init__(self, holder: str, sole: bool = False) -> None:
        self.holder = holder
        self.sole = sole
        self._held: dict[str, tuple[int, float]] = {}  # name -> (epoch, valid until, monotonic)

    def hold(self, name: str, epoch: int, until: float) -> bool:
        """Record a renewal; True when the lease is new to this process."""
        new = name not in self._held or self._held[name][0] != epoch
        self._held[name] = (epoch, until)
        return new

    def drop(self, name: str) -> None:
        self._held.pop(name, None)

    def lease(self, name: str) -> Lease | None:
        """The lease if this process may work under it now."""
        if self.sole:
            return Lease(name, self.holder, 0, fenced=False)
        held = self._held.get(name)
        if held is None or held[1] <= time.monotonic():
            return None
        return Lease(name, self.holder, held[0])

    def check(self, lease: Lease) -> None:
        """Refuse to go on writing (to a cluster) under a lease this process no longer holds
        with the same epoch; the database refuses the status write anyway (fencing)."""
        if self.lease(lease.name) != lease:
            raise LeaseLost(lease)

    def names(self) -> list[str]:
        """The leases held now (by name)."""
        return sorted(n for n in self._held if self.lease(n) is not None)
