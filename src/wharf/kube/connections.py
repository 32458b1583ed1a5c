"""One async client per registered cluster, rebuilt only when its kubeconfig changes.

Every client is built through `cluster_config`, so a stored kubeconfig is checked again on
each (re)load, and only its inline address and credentials reach lightkube."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient

from wharf.kube.clients import async_client
from wharf.kube.kubeconfig import AddressPolicy, cluster_config


@dataclass(frozen=True)
class ClusterTimeouts:
    """How long this server waits on a cluster: each request (connect, read), and each watch
    (the API server's timeoutSeconds; the client gives up a little after it)."""

    request: float = 10.0
    watch: int = 60


class ClusterConnections:
    def __init__(
        self,
        policy: AddressPolicy | None = None,
        timeouts: ClusterTimeouts | None = None,
        user_agent: str | None = None,
    ) -> None:
        self.policy = policy or AddressPolicy()
        self.timeouts = timeouts or ClusterTimeouts()
        self.user_agent = user_agent
        self._clients: dict[tuple[str, str], tuple[str, AsyncClient]] = {}

    def client(self, cluster: str, kubeconfig: dict[str, Any], purpose: str = "") -> AsyncClient:
        """The cluster's client for the controllers; another `purpose` (what a user asks of
        the cluster, as reading logs) gets a client of its own, so that its requests never
        take the slots the controllers' work and heartbeats need (kube.clients.IN_FLIGHT)."""
        print_ = fingerprint(kubeconfig)
        known = self._clients.get((cluster, purpose))
        if known and known[0] == print_:
            return known[1]
        client = async_client(
            cluster_config(kubeconfig, self.policy),
            timeout=self.timeouts.request,
            user_agent=self.user_agent,
        )
        self._clients[(cluster, purpose)] = (print_, client)
        return client

    def cached(self, cluster: str) -> AsyncClient | None:
        known = self._clients.get((cluster, ""))
        return known[1] if known else None

    async def forget(self, cluster: str) -> None:
        for key in [k for k in self._clients if k[0] == cluster]:
            known = self._clients.pop(key, None)
            if known is not None:
                await known[1].close()

    async def close(self) -> None:
        for name in {cluster for cluster, _ in self._clients}:
            await self.forget(name)


def fingerprint(kubeconfig: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(kubeconfig, sort_keys=True).encode()).hexdigest()
