"""Retention per tenant: the log store keeps every tenant's lines as long as its own global
retention, so this controller deletes, tenant by tenant, what is older than the tenant's
`spec.logs.retention` (the store's delete API, in the tenant's store tenant only). A delete
rewrites stored data, so it runs at most once a day per tenant (configurable), and at once
when a tenant's retention changes; search hides the older lines meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable

from wharf.core.controller import Controller
from wharf.logs.service import LogRetention


class LogRetentionController:
    def __init__(self, retention: LogRetention, resync: float = 30.0) -> None:
        self.retention = retention
        self.controller = Controller("log-retention", self.reconcile, self._keys, resync=resync)

    async def _keys(self) -> Iterable[Hashable]:
        return await asyncio.to_thread(self.retention.tenants)

    async def reconcile(self, key: Hashable) -> None:
        await self.retention.cut(str(key))
