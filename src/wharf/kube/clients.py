"""Clients for one cluster, from a kubeconfig file or its parsed content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2
from lightkube import AsyncClient, Client
from lightkube.config.kubeconfig import KubeConfig, SingleConfig

# Every write Wharf makes to a cluster is a server-side apply under this manager.
FIELD_MANAGER = "wharf"


class KubeconfigError(ValueError):
    """A kubeconfig that has no usable context."""


def _config(kubeconfig: Path | dict[str, Any] | SingleConfig, context: str | None) -> SingleConfig:
    if isinstance(kubeconfig, SingleConfig):
        return kubeconfig  # already checked and chosen (see wharf.kube.kubeconfig)
    config = (
        KubeConfig.from_dict(kubeconfig)
        if isinstance(kubeconfig, dict)
        else KubeConfig.from_file(kubeconfig)
    ).get(context)
    if config is None:
        raise KubeconfigError(f"kubeconfig has no context {context or '(current)'}")
    return config


def async_client(
    kubeconfig: Path | dict[str, Any] | SingleConfig,
    context: str | None = None,
    timeout: float = 10.0,
) -> AsyncClient:
    """A client whose every request gives up after `timeout` seconds (connect, read, write):
    a cluster that stops answering fails its callers instead of holding them forever."""
    return AsyncClient(
        _config(kubeconfig, context),
        field_manager=FIELD_MANAGER,
        timeout=httpx2.Timeout(timeout),
    )


def sync_client(
    kubeconfig: Path | dict[str, Any] | SingleConfig, context: str | None = None
) -> Client:
    return Client(_config(kubeconfig, context), field_manager=FIELD_MANAGER)


async def server_version(client: AsyncClient) -> str:
    """The cluster's gitVersion from /version (lightkube has no typed call for it)."""
    http = client._client._client  # the configured HTTP client: base URL, TLS, credentials
    response = await http.get("/version")
    response.raise_for_status()
    return str(response.json().get("gitVersion", ""))


async def api_groups(client: AsyncClient) -> dict[str, list[str]]:
    """The API groups the cluster serves (/apis), each with its versions."""
    http = client._client._client
    response = await http.get("/apis")
    response.raise_for_status()
    return {
        g["name"]: [v["version"] for v in g.get("versions", [])]
        for g in response.json().get("groups", [])
    }


def is_unreachable(exc: BaseException) -> bool:
    """Whether an error means the cluster could not be reached (rather than a refusal)."""
    return isinstance(exc, httpx2.TransportError | TimeoutError | ConnectionError)
