"""The kubeconfigs Wharf accepts for a cluster, and the only way it turns one into a client.

A kubeconfig is more than an address and a credential: client libraries honour `exec` (run a
command), `tokenFile`, `certificate-authority`, `client-certificate`/`client-key` (open files),
`auth-provider` and `proxy-url`. Sent by a caller, each turns the Wharf server against its own
host. So a cluster's kubeconfig may hold only inline credentials (a bearer token, or client
certificate and key data) and inline CA data, for an `https` server that is not a link-local
or metadata address (loopback only when the server allows it: the lab runs there).

The check runs when a cluster is registered (a 4xx naming the path in the document) and again
whenever a client is built from a stored kubeconfig, and the client is built from the allowed
fields alone, so a document stored before (or around) the check cannot reach lightkube whole.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from lightkube.config.kubeconfig import SingleConfig
from lightkube.config.models import Cluster, Context, User

# What each part of a kubeconfig may hold; anything else is refused with the reason below.
TOP_KEYS = frozenset(
    {"apiVersion", "kind", "clusters", "contexts", "users", "current-context", "preferences"}
)
CLUSTER_KEYS = frozenset({"server", "certificate-authority-data", "extensions"})
USER_KEYS = frozenset({"token", "client-certificate-data", "client-key-data", "extensions"})
CONTEXT_KEYS = frozenset({"cluster", "user", "namespace", "extensions"})
REFUSED_BECAUSE = {
    "exec": "would run a command on the Wharf server",
    "auth-provider": "would run an authentication plug-in on the Wharf server",
    "tokenFile": "would read a file on the Wharf server; put the token inline (token)",
    "client-certificate": "is a file on the Wharf server; use client-certificate-data",
    "client-key": "is a file on the Wharf server; use client-key-data",
    "certificate-authority": "is a file on the Wharf server; use certificate-authority-data",
    "proxy-url": "would send the cluster's traffic through another host",
    "insecure-skip-tls-verify": "would send credentials to an unverified server; give "
    "certificate-authority-data",
    "username": "basic authentication is not accepted; use a token or a client certificate",
    "password": "basic authentication is not accepted; use a token or a client certificate",
}
# Cloud metadata services, by name and by address (link-local ones are refused as a class).
METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal"}
)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("100.100.100.200", "168.63.129.16", "fd00:ec2::254")
)


# RFC 6052's well-known prefix, RFC 8215's local-use one (a /96 from it, as NAT64 gateways
# take), and the old IPv4-compatible form: all carry the IPv4 address in the last 32 bits.
IPV4_IN_LAST_32_BITS = tuple(
    ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96")
)


def _ipv4_inside(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 address an IPv6 one reaches (mapped, NAT64, 6to4), judged as that address."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if int(address) > 1 and any(address in n for n in IPV4_IN_LAST_32_BITS):  # not :: or ::1
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour or address


class KubeconfigRefused(ValueError):
    """A kubeconfig Wharf will not use; `path` names the place in the document."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.reason = message


def resolve(host: str) -> list[str]:
    """The addresses a host name resolves to ([] when it does not resolve now)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class AddressPolicy:
    """Which cluster addresses this server may reach: loopback only where it is allowed."""

    allow_loopback: bool = False
    resolver: Callable[[str], list[str]] = field(default=resolve, compare=False)

    def refusal(self, host: str) -> str | None:
        """Why the server must not connect to this host, or None when it may."""
        if host.lower().rstrip(".") in METADATA_HOSTS:
            return f"{host} is a cloud metadata service"
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in self.resolver(host)]
        for address in addresses:
            why = self._address_refusal(address)
            if why:
                return why if str(address) == host else f"{host} resolves to {why}"
        return None

    def _address_refusal(
        self, address: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> str | None:
        address = _ipv4_inside(address)
        if address in METADATA_ADDRESSES:
            return f"{address}, a cloud metadata address"
        if address.is_link_local:
            return f"{address}, a link-local address (cloud metadata lives there)"
        if address.is_unspecified or address.is_multicast:
            return f"{address}, which is not a cluster's address"
        if address.is_loopback and not self.allow_loopback:
            return (
                f"{address}, a loopback address: this server does not allow loopback "
                "clusters (WHARF_ALLOW_LOOPBACK_CLUSTERS)"
            )
        return None


def _map(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise KubeconfigRefused(path, f"must be a map, not {_type(value)}")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise KubeconfigRefused(path, f"must be a list, not {_type(value)}")
    return value


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise KubeconfigRefused(path, f"must be a non-empty string, not {_type(value)}")
    return value


def _type(value: Any) -> str:
    return {dict: "a map", list: "a list", str: "a string", type(None): "empty"}.get(
        type(value), type(value).__name__
    )


def _keys(entry: dict[str, Any], allowed: frozenset[str], path: str) -> None:
    for key in entry:
        if key in allowed:
            continue
        where = f"{path}.{key}"
        why = REFUSED_BECAUSE.get(str(key))
        if key == "insecure-skip-tls-verify" and entry[key] is False:
            continue
        raise KubeconfigRefused(
            where, f"not accepted: {why}" if why else "is not a field Wharf accepts here"
        )


def _base64(entry: dict[str, Any], key: str, path: str) -> str | None:
    if key not in entry:
        return None
    text = _text(entry[key], f"{path}.{key}")
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KubeconfigRefused(f"{path}.{key}", "is not base64 data") from None
    return text


def _named(doc: dict[str, Any], section: str, inner: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """{name: (path of the inner map, inner map)} of one section (clusters, users, contexts)."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for i, item in enumerate(_list(doc.get(section), section)):
        path = f"{section}[{i}]"
        item = _map(item, path)
        for key in item:
            if key not in ("name", inner):
                raise KubeconfigRefused(f"{path}.{key}", "is not a field Wharf accepts here")
        name = _text(item.get("name"), f"{path}.name")
        if name in out:
            raise KubeconfigRefused(f"{path}.name", f"{name!r} is named twice")
        out[name] = (f"{path}.{inner}", _map(item.get(inner, {}), f"{path}.{inner}"))
    return out


def _cluster(path: str, entry: dict[str, Any], policy: AddressPolicy) -> Cluster:
    _keys(entry, CLUSTER_KEYS, path)
    server = _text(entry.get("server"), f"{path}.server")
    try:
        url = urlsplit(server)
        host = url.hostname or ""
        url.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as exc:
        raise KubeconfigRefused(f"{path}.server", f"is not a URL: {exc}") from None
    if url.scheme != "https" or not host:
        raise KubeconfigRefused(f"{path}.server", "must be an https:// URL with a host")
    if url.username is not None or url.query or url.fragment:
        raise KubeconfigRefused(f"{path}.server", "must not carry credentials, query or fragment")
    why = policy.refusal(host)
    if why:
        raise KubeconfigRefused(f"{path}.server", f"not accepted: {why}")
    return Cluster(
        server=server,
        certificate_auth_data=_base64(entry, "certificate-authority-data", path),
    )


def _user(path: str, entry: dict[str, Any]) -> User:
    _keys(entry, USER_KEYS, path)
    cert = _base64(entry, "client-certificate-data", path)
    key = _base64(entry, "client-key-data", path)
    if (cert is None) != (key is None):
        missing = "client-key-data" if key is None else "client-certificate-data"
        raise KubeconfigRefused(f"{path}.{missing}", "is needed with the other half of the pair")
    token = _text(entry["token"], f"{path}.token") if "token" in entry else None
    if token is not None and any(c in token for c in "\r\n\0"):
        raise KubeconfigRefused(f"{path}.token", "must be one line")
    return User(token=token, client_cert_data=cert, client_key_data=key)


def cluster_config(doc: Any, policy: AddressPolicy) -> SingleConfig:
    """The current context of an accepted kubeconfig; KubeconfigRefused for anything else."""
    doc = _map(doc, "")
    _keys(doc, TOP_KEYS, "")
    if doc.get("kind") != "Config":
        raise KubeconfigRefused("kind", "must be Config")
    clusters = {
        n: _cluster(p, e, policy) for n, (p, e) in _named(doc, "clusters", "cluster").items()
    }
    users = {n: _user(p, e) for n, (p, e) in _named(doc, "users", "user").items()}
    contexts = _named(doc, "contexts", "context")
    for path, entry in contexts.values():
        _keys(entry, CONTEXT_KEYS, path)
    current = doc.get("current-context")
    if current not in contexts:
        raise KubeconfigRefused(
            "current-context", f"{current!r} is not among the contexts ({', '.join(contexts)})"
        )
    path, entry = contexts[current]
    cluster = _text(entry.get("cluster"), f"{path}.cluster")
    if cluster not in clusters:
        raise KubeconfigRefused(f"{path}.cluster", f"no cluster named {cluster!r}")
    namespace = entry.get("namespace")
    if namespace is not None:
        _text(namespace, f"{path}.namespace")
    user = entry.get("user")
    if user is not None and _text(user, f"{path}.user") not in users:
        raise KubeconfigRefused(f"{path}.user", f"no user named {user!r}")
    return SingleConfig(
        context_name=str(current),
        context=Context(cluster=cluster, user=user, namespace=namespace),
        cluster=clusters[cluster],
        user=users[user] if user is not None else User(),
    )
