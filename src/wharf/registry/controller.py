"""The registry's controllers. Replication copies each rule's pending tags from its source
registry to its target, and records what it copied in the rule's status; on a rule's schedule
it first compares source and target and queues what differs. Retention runs each policy that
has a schedule when it is due (its report kept in the policy's status).

Pending copies are queued into the rule's status by the source registry's push notification
(in the transaction that records it), so the work outlives the process: a server killed
mid-copy finds the tag still pending when it starts again and copies it anew (blobs the target
already holds are skipped). A copy that fails stays pending, with the error in the status, and
is retried with back-off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog

from wharf.core.controller import Controller
from wharf.core.resources import now
from wharf.registry.model import REPLICATION, RETENTION
from wharf.registry.service import (
    RegistryClient,
    TokenSigner,
    copy_image,
    queue_sync,
    run_scheduled_retention,
    sync_due,
    sync_plan,
)
from wharf.resources.service import ResourceService
from wharf.store.resources import ResourceStore, StoredResource

log = structlog.get_logger("wharf.registry")
Key = tuple[str, str]  # (tenant, rule)
HISTORY = 20  # copies remembered per rule


class ReplicationController:
    def __init__(self, service: ResourceService, signer: TokenSigner, resync: float = 30.0) -> None:
        self.service = service
        self.signer = signer
        self.controller = Controller("replication", self.reconcile, self.list_keys, resync=resync)

    async def list_keys(self) -> Iterable[Key]:
        def rules() -> list[Key]:
            with self.service.db.reader() as session:
                return [(r.tenant, r.name) for r in ResourceStore(session).query("ReplicationRule")]

        return await asyncio.to_thread(rules)

    def _load(
        self, key: Key
    ) -> tuple[StoredResource | None, StoredResource | None, StoredResource | None]:
        with self.service.db.reader() as session:
            store = ResourceStore(session)
            rule = store.get("ReplicationRule", key[0], key[1])
            if rule is None:
                return None, None, None
            spec = REPLICATION.typed(rule)
            return (
                rule,
                store.get("Registry", "", spec.source),
                store.get("Registry", "", spec.target),
            )

    async def reconcile(self, key: Key) -> None:
        rule, source, target = await asyncio.to_thread(self._load, key)
        if rule is None:
            return
        if source is None or target is None:
            if rule.status.get("pending") or sync_due(rule):
                await self._report(key, None, "the source or target registry is not registered")
            return
        if sync_due(rule):
            rule = await self._sync(key, rule, source, target)
        if not rule.status.get("pending"):
            return
        for item in list(rule.status["pending"]):
            try:
                digest = await asyncio.to_thread(
                    copy_image,
                    RegistryClient(self.signer, source),
                    RegistryClient(self.signer, target),
                    item["repository"],
                    item["tag"],
                )
            except Exception as exc:
                message = f"{item['repository']}:{item['tag']}: {type(exc).__name__}: {exc}"[:300]
                await self._report(key, None, message)
                raise  # retried with back-off; the copy stays pending
            await self._report(key, item, "", digest)
            log.info("replicated", rule=key, image=f"{item['repository']}:{item['tag']}")

    async def _sync(
        self, key: Key, rule: StoredResource, source: StoredResource, target: StoredResource
    ) -> StoredResource:
        """Queue every tag the target lacks (the schedule's full sync); the rule as it is now."""
        spec = REPLICATION.typed(rule)
        try:
            missing = await asyncio.to_thread(
                sync_plan,
                RegistryClient(self.signer, source),
                RegistryClient(self.signer, target),
                f"{key[0]}/{spec.project}/",
                spec.repositories,
            )
        except Exception as exc:
            await self._report(key, None, f"sync: {type(exc).__name__}: {exc}"[:300])
            raise  # retried with back-off; the sync stays due
        await asyncio.to_thread(queue_sync, self.service.db, key[0], key[1], missing)
        log.info("replication synced", rule=key, queued=len(missing))
        reloaded, _, _ = await asyncio.to_thread(self._load, key)
        return reloaded or rule

    async def _report(
        self, key: Key, copied: dict[str, Any] | None, error: str, digest: str = ""
    ) -> None:
        """Record a copy done (or the error that stopped one). Only the pending entry that was
        copied goes: a push of the same tag that came meanwhile stays pending."""

        def build(stored: StoredResource) -> dict[str, Any]:
            status = dict(stored.status)
            if copied is not None:
                status["pending"] = [p for p in status.get("pending", []) if p != copied]
                done = {**copied, "digest": digest or copied.get("digest", ""), "time": now()}
                status["history"] = [*status.get("history", []), done][-HISTORY:]
            status["lastError"] = error
            return status

        await asyncio.to_thread(self.service.write_status, "ReplicationRule", key[0], key[1], build)


class RetentionController:
    """Runs each retention policy that has a schedule when it is due: every tick (resync)
    looks at every policy; a run that is not due writes nothing."""

    def __init__(self, service: ResourceService, signer: TokenSigner, resync: float = 30.0) -> None:
        self.service = service
        self.signer = signer
        self.controller = Controller("retention", self.reconcile, self.list_keys, resync=resync)

    async def list_keys(self) -> Iterable[Key]:
        def policies() -> list[Key]:
            with self.service.db.reader() as session:
                found = ResourceStore(session).query("RetentionPolicy")
                return [(r.tenant, r.name) for r in found if RETENTION.typed(r).schedule]

        return await asyncio.to_thread(policies)

    async def reconcile(self, key: Key) -> None:
        ran = await asyncio.to_thread(
            run_scheduled_retention, self.service.db, self.signer, key[0], key[1]
        )
        if ran:
            log.info("retention ran on its schedule", policy=key)
