"""Traffic rules rendered as NetworkPolicies, and the evaluator's reading of NetworkPolicy
semantics: selection, directions, peers, ports."""

from __future__ import annotations

import pytest

from wharf.core.errors import InvalidError
from wharf.network.traffic import (
    Address,
    Place,
    Pod,
    TrafficPolicySpec,
    check_rules,
    may_reach,
    render_policies,
    selects,
)

NS = {"kubernetes.io/metadata.name": "t--shop-dev"}
WEB = Pod("t--shop-dev", {**NS, "wharf.io/project": "shop"}, {"wharf.io/app": "web"})
DB = Pod("t--shop-dev", {**NS, "wharf.io/project": "shop"}, {"wharf.io/app": "db"})
META = {"namespace": "t--shop-dev", "labels": {}}


def _policy(name: str, spec: dict) -> dict:
    return {"metadata": {"name": name}, "spec": spec}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
            {"a": "2"},
            True,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {}, True),
    ],
)
def test_label_selectors(selector, labels, expected):
    assert selects(selector, labels) is expected


def test_no_policy_allows_and_a_selecting_policy_limits_to_its_rules():
    assert may_reach(WEB, DB, 80, {}).allowed
    only_web = _policy(
        "in",
        {
            "podSelector": {"matchLabels": {"wharf.io/app": "db"}},
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"wharf.io/app": "web"}}}],
                    "ports": [{"port": 5000, "endPort": 5010}],
                }
            ],
        },
    )
    policies = {"t--shop-dev": [only_web]}
    assert may_reach(WEB, DB, 5005, policies).allowed
    assert not may_reach(WEB, DB, 5011, policies).allowed
    assert not may_reach(WEB, DB, 5005, policies, protocol="UDP").allowed
    assert not may_reach(DB, DB, 5005, policies).allowed
    assert may_reach(DB, WEB, 5005, policies).allowed  # web is not selected


def test_ip_blocks_match_addresses_with_their_exceptions():
    policy = _policy(
        "in",
        {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}],
        },
    )
    policies = {"t--shop-dev": [policy]}
    assert may_reach(Address("10.2.3.4"), WEB, 80, policies).allowed
    assert not may_reach(Address("10.1.3.4"), WEB, 80, policies).allowed
    assert not may_reach(DB, WEB, 80, policies).allowed  # pods are not in ipBlocks here


def test_a_rule_renders_both_sides_inside_the_project_and_one_side_across():
    spec = TrafficPolicySpec.model_validate(
        {
            "defaultDeny": True,
            "allow": [
                {"from": {"application": "web"}, "to": {"application": "db"}, "ports": [5432]},
                {"from": {"project": "ops"}, "to": {"application": "web"}, "ports": [80]},
                {"from": {"project": "shop"}, "to": {"dns": True}},
            ],
        }
    )
    names = [p["metadata"]["name"] for p in render_policies(spec, Place("t", "shop", "dev"), META)]
    assert names == [
        "wharf-default-deny",
        "wharf-allow-0-in",
        "wharf-allow-0-out",
        "wharf-allow-1-in",
        "wharf-allow-2-out",
    ]


def test_a_rule_must_start_or_end_in_its_project():
    spec = TrafficPolicySpec.model_validate(
        {"allow": [{"from": {"project": "ops"}, "to": {"cidr": "10.0.0.0/8"}}]}
    )
    with pytest.raises(InvalidError) as caught:
        check_rules(spec, "shop")
    assert caught.value.field == "spec.allow[0]"
