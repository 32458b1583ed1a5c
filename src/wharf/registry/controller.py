"""The replication controller: copies each rule's pending tags from its source registry to its
target, and records what it copied in the rule's status.

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
from wharf.registry.model import REPLICATION
from wharf.registry.service import RegistryClient, TokenSigner, copy_image
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
        if rule is None or not rule.status.get("pending"):
            return
        if source is None or target is None:
            await self._report(key, None, "the source or target registry is no longer registered")
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
