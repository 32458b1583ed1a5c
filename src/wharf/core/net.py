"""Where the server may connect on a tenant's behalf (release webhooks, web analysis).

A tenant names a URL and the server fetches it: without a guard that is server-side request
forgery — the server's own loopback, its private network, a cloud metadata service, reached
with the server's position. So a URL's host is resolved once, every address it resolves to
must be a public one (or inside a network the platform admin allows, WHARF_OUTBOUND_ALLOW),
and the caller connects to the address that was checked, not to the name again (a second
resolution could answer differently). Redirects are not followed by the callers.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal"}
)


class OutboundRefused(ValueError):
    """A URL the server will not connect to, and why."""


def resolve(host: str) -> list[str]:
    """The addresses a host name resolves to ([] when it does not resolve now)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def networks(setting: str) -> tuple[Network, ...]:
    """WHARF_OUTBOUND_ALLOW: comma-separated addresses or networks (`127.0.0.1,10.1.0.0/16`)."""
    return tuple(ipaddress.ip_network(p.strip()) for p in setting.split(",") if p.strip())


@dataclass(frozen=True)
class Target:
    """A checked URL: connect to `address`, say `host` (Host header, TLS server name)."""

    url: str
    scheme: str
    host: str
    port: int
    address: str

    def connect_url(self) -> str:
        """The URL with its host replaced by the checked address."""
        parts = urllib.parse.urlsplit(self.url)
        literal = f"[{self.address}]" if ":" in self.address else self.address
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{literal}:{self.port}"))


@dataclass(frozen=True)
class OutboundPolicy:
    """Public addresses only, plus the networks the platform admin allows."""

    allowed: tuple[Network, ...] = ()
    resolver: Callable[[str], list[str]] = field(default=resolve, compare=False)

    def target(self, url: str) -> Target:
        """The URL checked and resolved; OutboundRefused says why it may not be reached."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise OutboundRefused("must be an http or https URL")
        if parts.username or parts.password:
            raise OutboundRefused("must not carry credentials; the request is signed instead")
        host = parts.hostname or ""
        if not host:
            raise OutboundRefused("has no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise OutboundRefused("has a port that is not a number from 0 to 65535") from None
        if host.rstrip(".").lower() in METADATA_HOSTS:
            raise OutboundRefused(f"{host} is a cloud metadata service")
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in self.resolver(host)]
        if not addresses:
            raise OutboundRefused(f"{host} does not resolve")
        for address in addresses:
            if why := self.refusal(address):
                raise OutboundRefused(why if str(address) == host else f"{host} resolves to {why}")
        return Target(url, parts.scheme, host, port, str(addresses[0]))

    def refusal(self, address: Address) -> str | None:
        if any(address.version == n.version and address in n for n in self.allowed):
            return None
        inner = _ipv4_inside(address)
        if inner.is_global and not inner.is_multicast:
            return None
        return (
            f"{address}, an internal address (loopback, private, link-local or metadata); the "
            "platform admin may allow it (WHARF_OUTBOUND_ALLOW)"
        )


def _ipv4_inside(address: Address) -> Address:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4), judged as that address."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped:
        return address.ipv4_mapped
    nat64 = ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48")
    if any(address in n for n in nat64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour or address
