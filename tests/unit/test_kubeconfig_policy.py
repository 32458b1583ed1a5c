"""Which cluster addresses the server may reach, including names that resolve somewhere else."""

import pytest

from wharf.kube.kubeconfig import AddressPolicy, KubeconfigRefused, cluster_config

NAMES = {
    "rebound.example": ["169.254.169.254"],
    "inside.example": ["127.0.0.1"],
    "cluster.example": ["10.0.0.5"],
}


def policy(allow_loopback: bool = False) -> AddressPolicy:
    return AddressPolicy(allow_loopback, resolver=lambda host: NAMES.get(host, []))


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("rebound.example", "link-local"),
        ("inside.example", "loopback"),
        ("169.254.0.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("0.0.0.0", "not a cluster"),
        ("Metadata.Google.Internal.", "metadata"),
        # The same addresses inside IPv6 forms that reach IPv4: mapped, NAT64, 6to4.
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("64:ff9b::7f00:1", "loopback"),
        ("2002:a9fe:a9fe::1", "link-local"),
        ("::ffff:100.100.100.200", "metadata"),
        # RFC 8215's local-use NAT64 prefix (a /96 taken from it), and the old
        # IPv4-compatible form.
        ("64:ff9b:1::a9fe:a9fe", "link-local"),
        ("64:ff9b:1:2::7f00:1", "loopback"),
        ("::169.254.169.254", "link-local"),
    ],
)
def test_names_and_addresses_that_lead_to_the_servers_own_host_are_refused(host, why):
    assert why in (policy().refusal(host) or "")


def test_loopback_is_allowed_only_by_the_setting():
    assert policy(allow_loopback=True).refusal("inside.example") is None
    assert policy(allow_loopback=True).refusal("::1") is None
    assert policy(allow_loopback=True).refusal("169.254.169.254") is not None
    assert policy().refusal("cluster.example") is None


def test_the_client_is_built_from_the_allowed_fields_alone():
    doc = {
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://cluster.example"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "n"}}],
        "current-context": "x",
    }
    config = cluster_config(doc, policy())
    assert (config.cluster.server, config.user.token, config.namespace) == (
        "https://cluster.example",
        "t",
        "n",
    )
    assert config.user.exec is None
    assert config.user.token_file is None
    doc["users"][0]["user"]["tokenFile"] = "/etc/shadow"
    with pytest.raises(KubeconfigRefused) as refused:
        cluster_config(doc, policy())
    assert refused.value.path == "users[0].user.tokenFile"
