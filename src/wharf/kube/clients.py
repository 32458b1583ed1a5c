"""Clients for one cluster, from a kubeconfig file or its parsed content."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
from lightkube import AsyncClient, Client
from lightkube.config.client_adapter import verify_cluster
from lightkube.config.kubeconfig import KubeConfig, SingleConfig

# Every write Wharf makes to a cluster is a server-side apply under this manager.
FIELD_MANAGER = "wharf"
# A client keeps every connection it opened (up to its limit) for a while. httpx keeps 20 of
# 100: under concurrent releases each burst of calls to a cluster closed the surplus after use
# and the next burst paid a TLS handshake for each again, on both ends (py-spy: 5 % of the
# server's event loop in do_handshake). The API server closes idle connections after 90 s.
POOL = httpx2.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=30)
# Requests in flight to one cluster at once (watches aside; a client's calls wait for a slot
# as long as their pool timeout). The pool looks at each of its connections on every request:
# 100 applies at once over 100 connections cost the client 2.1-2.8 ms of CPU each, 20 at once
# 1.5-1.7 ms, and the API server answered more of them per second (docs/apps.md, "Requests
# in flight to a cluster").
IN_FLIGHT = 20


# A request extension: this request waits for no slot (the heartbeat's probe, which must
# not time out behind a burst of delivery and call a busy cluster unreachable).
UNBOUNDED = "wharf.unbounded"


class _Releasing(httpx2.AsyncByteStream):
    """A response body that gives its request's slot back once it is closed."""

    def __init__(self, inner: httpx2.AsyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:  # once, however often it is closed
                release()


class BoundedTransport(httpx2.AsyncHTTPTransport):
    """At most `in_flight` requests at once, each holding its slot until its response is
    read; a watch or a followed log (open for minutes) takes none."""

    def __init__(self, *args: Any, in_flight: int = IN_FLIGHT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_flight = in_flight
        self._slots = asyncio.Semaphore(in_flight)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        params = request.url.params
        if (
            params.get("watch") in ("true", "1")
            or params.get("follow") in ("true", "1")
            or request.extensions.get(UNBOUNDED)
        ):
            return await super().handle_async_request(request)
        wait = (request.extensions.get("timeout") or {}).get("pool")
        try:
            async with asyncio.timeout(wait):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx2.PoolTimeout(
                f"no free slot among {self.in_flight} requests to the cluster within {wait} s",
                request=request,
            ) from None
        try:
            response = await super().handle_async_request(request)
        except BaseException:
            self._slots.release()
            raise
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _Releasing(response.stream, self._slots.release)
        return response


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
    user_agent: str | None = None,
    in_flight: int = IN_FLIGHT,
) -> AsyncClient:
    """A client whose every request gives up after `timeout` seconds (connect, read, write,
    and waiting for one of its `in_flight` slots):
    a cluster that stops answering fails its callers instead of holding them forever. The
    user agent names the caller in the cluster's audit log (which replica wrote)."""
    config = _config(kubeconfig, context)
    assert config.user is not None  # lightkube requires one too
    # The transport carries the pool's limits, so it carries the TLS set-up as well (the
    # cluster's CA and the client certificate, as lightkube would make it).
    transport = BoundedTransport(
        verify=verify_cluster(config.cluster, config.user, config.abs_file),
        limits=POOL,
        in_flight=in_flight,
    )
    client = AsyncClient(
        config,
        field_manager=FIELD_MANAGER,
        timeout=httpx2.Timeout(timeout),
        transport=transport,
    )
    if user_agent is not None:
        client._client._client.headers["User-Agent"] = user_agent  # lightkube has no option
    return client


def sync_client(
    kubeconfig: Path | dict[str, Any] | SingleConfig, context: str | None = None
) -> Client:
    return Client(_config(kubeconfig, context), field_manager=FIELD_MANAGER)


async def server_version(client: AsyncClient) -> str:
    """The cluster's gitVersion from /version (lightkube has no typed call for it)."""
    http = client._client._client  # the configured HTTP client: base URL, TLS, credentials
    response = await http.get("/version", extensions={UNBOUNDED: True})
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
