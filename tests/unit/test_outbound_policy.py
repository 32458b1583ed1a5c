"""The guard on URLs the server fetches for tenants (release webhooks): internal addresses are
refused unless allowed, by name or number, in every spelling; the address checked is the one
connected to."""

from __future__ import annotations

import pytest

from wharf.core.net import OutboundPolicy, OutboundRefused, networks

NAMES = {
    "hooks.example": ["93.184.216.34"],
    "sneaky.example": ["93.184.216.34", "10.0.0.7"],  # one internal answer is enough
    "inside.example": ["192.168.1.20"],
    "nowhere.example": [],
}


def policy(allow: str = "") -> OutboundPolicy:
    return OutboundPolicy(networks(allow), resolver=lambda host: NAMES.get(host, []))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.0.0.2:8080/",
        "http://[::1]/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.0.1/",
        "http://100.64.0.1/",  # carrier-grade NAT: not the internet
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
        "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://metadata.google.internal/",
        "http://sneaky.example/",
        "http://inside.example/",
        "http://nowhere.example/",
        "ftp://hooks.example/",
        "file:///etc/passwd",
        "http://user:pw@hooks.example/",
        "http:///path",
        "http://hooks.example:99999/",
    ],
)
def test_internal_or_malformed_urls_are_refused(url: str):
    with pytest.raises(OutboundRefused):
        policy().target(url)


def test_a_public_name_is_connected_at_the_address_it_was_checked_at():
    target = policy().target("https://hooks.example/release?x=1")
    assert (target.host, target.port, target.address) == ("hooks.example", 443, "93.184.216.34")
    assert target.connect_url() == "https://93.184.216.34:443/release?x=1"


def test_the_platform_admin_may_allow_an_internal_network():
    allowed = policy("127.0.0.1, 192.168.1.0/24")
    assert allowed.target("http://127.0.0.1:8080/h").address == "127.0.0.1"
    assert allowed.target("http://inside.example/").address == "192.168.1.20"
    with pytest.raises(OutboundRefused, match="WHARF_OUTBOUND_ALLOW"):
        allowed.target("http://127.0.0.2/")  # the allowance is exact
