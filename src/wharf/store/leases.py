"""Leases in PostgreSQL: take, renew, release, and fence writes by epoch.

Time is the database's (`clock_timestamp()`), so replicas on machines whose clocks disagree
still agree on who holds what. A lease changes holder only once it has expired; each change
of holder bumps `epoch`. A write made under a lease first locks that lease's row (FOR SHARE)
with the epoch it was given: a replica that lost its lease is refused, and one that still
holds it keeps it until its transaction ends (a takeover waits for the row).
SQLite runs one process, which holds every lease: nothing here is used there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from wharf.core.leases import Lease, LeaseLost
from wharf.store.tables import leases

REPLICA_PREFIX = "replica/"  # each live replica renews one of these: how many share the work


@dataclass(frozen=True)
class Holding:
    name: str
    holder: str
    epoch: int
    expires_at: dt.datetime


def _until(seconds: float) -> ColumnElement[dt.datetime]:
    return func.clock_timestamp() + func.make_interval(0, 0, 0, 0, 0, 0, literal(seconds))


def take(session: Session, name: str, holder: str, seconds: float) -> int | None:
    """Renew `name` for `holder`, or take it when free or expired; its epoch, or None when
    another replica holds it."""
    now, until = func.clock_timestamp(), _until(seconds)
    row = {"name": name, "holder": holder, "epoch": 1, "expires_at": until, "renewed_at": now}
    statement = (
        insert(leases)
        .values(row)
        .on_conflict_do_update(
            index_elements=[leases.c.name],
            set_={
                "holder": holder,
                "epoch": leases.c.epoch + case((leases.c.holder != holder, 1), else_=0),
                "expires_at": until,
                "renewed_at": now,
            },
            where=or_(leases.c.holder == holder, leases.c.expires_at < now),
        )
        .returning(leases.c.epoch)
    )
    epoch = session.execute(statement).scalar()
    return None if epoch is None else int(epoch)


def release(session: Session, names: Iterable[str], holder: str) -> None:
    """Give leases back at once (a clean stop, or more than a fair share)."""
    session.execute(
        update(leases)
        .where(leases.c.name.in_(list(names)), leases.c.holder == holder)
        .values(expires_at=func.clock_timestamp())
    )


def holdings(session: Session) -> list[Holding]:
    """Every lease not yet expired."""
    rows = session.execute(
        select(leases.c.name, leases.c.holder, leases.c.epoch, leases.c.expires_at).where(
            leases.c.expires_at > func.clock_timestamp()
        )
    )
    return [Holding(r.name, r.holder, int(r.epoch), r.expires_at) for r in rows]


def fence(session: Session, lease: Lease) -> None:
    """Refuse this transaction unless `lease` is still held with its epoch; hold the row
    (shared) until the transaction ends, so nobody takes it over mid-write."""
    held = session.execute(
        select(leases.c.epoch)
        .where(
            and_(
                leases.c.name == lease.name,
                leases.c.holder == lease.holder,
                leases.c.epoch == lease.epoch,
                leases.c.expires_at > func.clock_timestamp(),
            )
        )
        .with_for_update(read=True)
    ).first()
    if held is None:
        raise LeaseLost(lease)
