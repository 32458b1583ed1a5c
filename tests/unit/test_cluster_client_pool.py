"""A cluster client keeps the connections a burst of concurrent calls opened, so the next burst
reuses them instead of opening (and, against a real cluster, TLS-handshaking) new ones."""

import asyncio

from lightkube.config.kubeconfig import KubeConfig

from wharf.kube.clients import async_client, server_version

BURST = 40  # concurrent calls to one cluster: more than httpx's default keep-alive pool (20)


class CountingServer:
    """An HTTP/1.1 server answering /version after a short delay (so a burst's calls overlap),
    keeping each connection open, and counting the connections it accepted."""

    def __init__(self) -> None:
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                await asyncio.sleep(0.05)
                body = b'{"gitVersion": "v1.0.0"}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_a_second_burst_reuses_the_first_bursts_connections() -> None:
    counting = CountingServer()
    server = await asyncio.start_server(counting.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = KubeConfig.from_dict(
        {
            "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    ).get()
    async with server:
        client = async_client(config)
        try:
            for _ in range(2):
                versions = await asyncio.gather(*(server_version(client) for _ in range(BURST)))
                assert versions == ["v1.0.0"] * BURST
        finally:
            await client.close()
    assert counting.connections == BURST  # the old pool kept 20: 60 connections
