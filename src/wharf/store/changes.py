"""Changes told to the other replicas.

A write taken by one replica's API wakes that replica's controllers at once; the replica that
holds the cluster (or the platform-wide work) it concerns is told through PostgreSQL's
NOTIFY on one channel, which every replica LISTENs to. A notification is sent after the
commit, so it never tells of a change that did not happen; one lost (a replica's connection
down, a crash between commit and notify) is made up for by the listener's reconnect, which
reports that it may have missed some, and by the controllers' resync. SQLite has one process:
nothing to tell.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import structlog
from sqlalchemy import text
from sqlalchemy.engine import make_url

from wharf.core.resources import NAME_RE
from wharf.store.database import Database

log = structlog.get_logger("wharf.changes")

CHANNEL = "wharf_changes"
USER = "User"  # the kind a user's change (disabled, renamed identities) is told under
KIND_RE = re.compile(r"^[A-Z][A-Za-z]{0,63}$")
PING_SECONDS = 30.0  # a connection silent this long is asked whether it is still there


@dataclass(frozen=True)
class Change:
    replica: str
    kind: str
    tenant: str
    name: str

    def payload(self) -> str:
        return json.dumps([self.replica, self.kind, self.tenant, self.name])

    @classmethod
    def parse(cls, payload: str) -> Change | None:
        """The change a payload tells, or None when it is not one Wharf sends. Anyone who may
        connect to the database may NOTIFY: a name that is not a valid name ("web " or
        "web,other") must not reach a controller, whose label selectors a cluster parses
        leniently (a missing object's key removes what carries its labels)."""
        try:
            replica, kind, tenant, name = json.loads(payload)
        except (ValueError, TypeError, RecursionError):
            return None  # not ours (something else NOTIFYing on the channel)
        fields = (replica, kind, tenant, name)
        if not all(isinstance(f, str) for f in fields):
            return None
        if not KIND_RE.fullmatch(kind) or (tenant and not NAME_RE.fullmatch(tenant)):
            return None
        if kind != USER and not NAME_RE.fullmatch(name):
            return None  # a user's change looks at every project: its name is not used
        return cls(replica, kind, tenant, name)


class ChangeChannel:
    """Tells the other replicas which object changed, and hears what they tell."""

    def __init__(self, db: Database, replica: str, retry: float = 1.0) -> None:
        self.db = db
        self.replica = replica
        self.retry = retry  # the first reconnect's delay; it doubles up to 30 s
        self.enabled = db.dialect == "postgresql"
        self.heard = 0  # changes from other replicas (for tests and /metrics)

    def tell(self, kind: str, tenant: str, name: str) -> None:
        """After a commit: tell the others (best effort; their resync covers a failure)."""
        if not self.enabled:
            return
        change = Change(self.replica, kind, tenant, name)
        try:
            with self.db.engine.connect() as connection:
                connection.execute(
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": CHANNEL, "payload": change.payload()},
                )
                connection.commit()
        except Exception as exc:  # the write is committed; the others find it at resync
            log.warning("could not tell the other replicas", kind=kind, error=str(exc))

    async def _hand_on(self, payload: str, heard: Callable[[Change], None]) -> None:
        change = Change.parse(payload)
        if change is None or change.replica == self.replica:
            return
        self.heard += 1
        try:
            # In a thread: what it wakes may read the database first.
            await asyncio.to_thread(heard, change)
        except Exception as exc:  # one change's failure is not the channel's
            log.warning("could not act on another replica's change", error=str(exc))

    def _conninfo(self) -> str:
        url = make_url(self.db.url).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    async def listen(self, heard: Callable[[Change], None], missed: Callable[[], None]) -> None:
        """Hand each change another replica tells to `heard` (in a worker thread), until
        cancelled. After a broken connection, once listening again, `missed` is called (in
        the loop): changes told meanwhile are gone."""
        if not self.enabled:
            return
        delay, broken = self.retry, False
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(
                    self._conninfo(), autocommit=True
                )
                async with connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    if broken:
                        log.info("listening to the other replicas again")
                        missed()
                    delay, broken = self.retry, False
                    while True:
                        async for notify in connection.notifies(timeout=PING_SECONDS):
                            await self._hand_on(notify.payload, heard)
                        # Quiet for a while: a half-open connection (the server gone without
                        # a word) would stay quiet forever, so ask.
                        async with asyncio.timeout(PING_SECONDS):
                            await connection.execute("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not broken:
                    log.warning("not listening to the other replicas", error=str(exc))
                broken = True
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)
