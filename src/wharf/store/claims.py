"""Claims on names that must be unique across the platform, held by one resource each.

A claim is taken in the same transaction as the write of the resource that needs it, so two
writes racing for one name cannot both succeed: the primary key decides, and the loser gets a
409 that names only the holder's kind (never its tenant: that would tell one tenant about
another).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as attribute

from sqlalchemy import ColumnElement, and_, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from wharf.core.errors import ConflictError
from wharf.store.tables import claims


@dataclass(frozen=True)
class Holder:
    kind: str
    tenant: str
    name: str


def _short(key: str) -> str:
    """Keys longer than the column are held by their digest (still one holder per name)."""
    return key if len(key) <= 255 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Wanted:
    """One name to hold, with what to say when another resource has it."""

    name: str
    what: str  # e.g. "namespace shop-dev"
    field: str  # where in the spec the name comes from
    key: str = attribute(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", _short(self.name))


def _of(holder: Holder) -> ColumnElement[bool]:
    return and_(
        claims.c.holder_kind == holder.kind,
        claims.c.holder_tenant == holder.tenant,
        claims.c.holder_name == holder.name,
    )


def held_by(session: Session, register: str, holder: Holder) -> set[str]:
    rows = session.execute(select(claims.c.key).where(claims.c.register == register, _of(holder)))
    return {r[0] for r in rows}


def hold(session: Session, register: str, wanted: Iterable[Wanted], holder: Holder) -> None:
    """Hold exactly `wanted` in `register` for `holder`: take the new ones, release the rest."""
    wanted = list(wanted)
    mine = held_by(session, register, holder)
    for want in wanted:
        if want.key in mine:
            continue
        row = session.execute(
            select(claims.c.holder_kind).where(
                claims.c.register == register, claims.c.key == want.key
            )
        ).first()
        other = row[0] if row else holder.kind
        taken = ConflictError(
            f"{want.field}: {want.what} is already held by another {other}", field=want.field
        )
        if row is not None:
            raise taken
        try:
            with session.begin_nested():
                session.execute(
                    insert(claims).values(
                        register=register,
                        key=want.key,
                        holder_kind=holder.kind,
                        holder_tenant=holder.tenant,
                        holder_name=holder.name,
                    )
                )
        except IntegrityError:
            raise taken from None  # taken by a concurrent transaction after our read
    stale = mine - {w.key for w in wanted}
    if stale:
        session.execute(
            delete(claims).where(
                claims.c.register == register, _of(holder), claims.c.key.in_(stale)
            )
        )


def release(session: Session, holder: Holder) -> None:
    """Give up every claim of a resource (it is deleted)."""
    session.execute(delete(claims).where(_of(holder)))
