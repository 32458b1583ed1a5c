"""The quota rules of tenancy: resource names, parsing, the hierarchy checks and the split."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wharf.clusters.model import GrantedPool, NodePoolSpec, pool_labels_of, tainted_node
from wharf.core.errors import InvalidError, QuotaExceededError
from wharf.tenancy.guard import cluster_roles
from wharf.tenancy.model import (
    Environment,
    ProjectSpec,
    amounts,
    canonical,
    check_not_below,
    check_quota_names,
    check_tenant_name,
    check_within,
    namespace_hard,
    namespace_name,
    pod_security_labels,
    spelled_as,
    split_project_quota,
)

F = Fraction
GI = 2**30
CPU = "requests.cpu"
MEMORY = "requests.memory"


# --- canonical names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cpu", "requests.cpu"),
        ("memory", "requests.memory"),
        ("ephemeral-storage", "requests.ephemeral-storage"),
        ("nvidia.com/gpu", "requests.nvidia.com/gpu"),
        ("requests.cpu", "requests.cpu"),
        ("requests.memory", "requests.memory"),
        ("requests.nvidia.com/gpu", "requests.nvidia.com/gpu"),
        ("limits.cpu", "limits.cpu"),
        ("limits.nvidia.com/gpu", "limits.nvidia.com/gpu"),
        ("pods", "pods"),
        ("services.nodeports", "services.nodeports"),
        ("requests.storage", "requests.storage"),
        ("count/pods", "count/pods"),
        ("count/deployments.apps", "count/deployments.apps"),
        (
            "gold.storageclass.storage.k8s.io/requests.storage",
            "gold.storageclass.storage.k8s.io/requests.storage",
        ),
        (
            "gold.storageclass.storage.k8s.io/persistentvolumeclaims",
            "gold.storageclass.storage.k8s.io/persistentvolumeclaims",
        ),
    ],
)
def test_canonical_maps_each_spelling_to_the_one_quota_name(name: str, expected: str) -> None:
    assert canonical(name) == expected


@pytest.mark.parametrize("name", ["cpu", "memory", "nvidia.com/gpu", "pods", "count/pods"])
def test_canonical_is_idempotent(name: str) -> None:
    assert canonical(canonical(name)) == canonical(name)


@pytest.mark.parametrize("name", ["cpu", "requests.cpu"])
def test_usage_is_shown_under_the_name_the_quota_uses(name: str) -> None:
    used = {"requests.cpu": "300m", "requests.memory": "1Gi", "pods": "3"}
    quota = {name: "4", "memory": "8Gi"}
    assert spelled_as(used, quota) == {name: "300m", "memory": "1Gi", "pods": "3"}
    assert spelled_as({"cpu": "1"}, ["requests.cpu"]) == {"requests.cpu": "1"}
    assert spelled_as(None, quota) == {}


# --- accepted and rejected names -----------------------------------------------------------

ACCEPTED = [
    "cpu",
    "memory",
    "pods",
    "services.nodeports",
    "requests.storage",
    "nvidia.com/gpu",
    "count/deployments.apps",
    "gold.storageclass.storage.k8s.io/requests.storage",
]


@pytest.mark.parametrize("name", ACCEPTED)
def test_amounts_accepts_a_kubernetes_quota_name_under_its_canonical_name(name: str) -> None:
    assert amounts({name: "3"}, "spec.quota") == {canonical(name): F(3)}


def test_amounts_parses_every_accepted_name_together_exactly() -> None:
    quota = dict.fromkeys(ACCEPTED, "1")
    quota.update({"cpu": "1500m", "memory": "1.5Gi"})
    parsed = amounts(quota, "spec.quota")
    assert parsed[CPU] == F(3, 2)
    assert parsed[MEMORY] == F(3 * GI, 2)
    assert parsed["requests.nvidia.com/gpu"] == 1
    assert parsed["gold.storageclass.storage.k8s.io/requests.storage"] == 1
    assert set(parsed) == {canonical(n) for n in ACCEPTED}


@pytest.mark.parametrize(
    "name",
    [
        "cpus",
        "CPU",
        "gpu",
        "requests.gpu",
        "limits.pods",
        "count/",
        "count/Deployments",
        "/gpu",
        "nvidia.com/",
        "gold.storageclass.storage.k8s.io/",
        "",
    ],
)
def test_unknown_quota_name_is_rejected_naming_the_key(name: str) -> None:
    with pytest.raises(InvalidError) as caught:
        check_quota_names({"pods": "1", name: "1"}, "spec.quota")
    assert caught.value.field == f"spec.quota.{name}"
    with pytest.raises(InvalidError) as caught:
        amounts({name: "1"}, "spec.environments[0].quota")
    assert caught.value.field == f"spec.environments[0].quota.{name}"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("cpu", "requests.cpu"),
        ("memory", "requests.memory"),
        ("nvidia.com/gpu", "requests.nvidia.com/gpu"),
        ("ephemeral-storage", "requests.ephemeral-storage"),
    ],
)
def test_two_spellings_of_one_resource_are_rejected(first: str, second: str) -> None:
    for quota in ({first: "1", second: "2"}, {second: "2", first: "1"}):
        with pytest.raises(InvalidError) as caught:
            amounts(quota, "spec.quota")
        assert caught.value.field in {f"spec.quota.{first}", f"spec.quota.{second}"}
        assert "same resource" in caught.value.message


@pytest.mark.parametrize("value", ["lots", "1x", "-1", "1.5.2"])
def test_a_bad_amount_is_rejected_naming_the_key(value: str) -> None:
    # The docstring promises "errors naming the field"; the field is the key whose value is bad,
    # as it is for a bad name or a duplicate spelling.
    with pytest.raises(InvalidError) as caught:
        amounts({"pods": "1", "cpu": value}, "spec.quota")
    assert "spec.quota.cpu" in caught.value.message
    assert caught.value.field == "spec.quota.cpu"


# --- check_within ----------------------------------------------------------------------------


def test_check_within_refuses_and_says_by_how_much() -> None:
    with pytest.raises(QuotaExceededError) as caught:
        check_within(
            "project web",
            "tenant acme",
            limit={CPU: F(4)},
            others={CPU: F(3)},
            asked={CPU: F(3, 2)},
            where="spec.quota",
        )
    error = caught.value
    assert "by 500m" in error.message
    assert error.details["exceededBy"] == "500m"
    assert error.details["resource"] == CPU
    assert error.field == f"spec.quota.{CPU}"


def test_check_within_writes_memory_overshoot_in_binary_units() -> None:
    with pytest.raises(QuotaExceededError) as caught:
        check_within(
            "project web",
            "tenant acme",
            limit={MEMORY: F(8 * GI)},
            others={MEMORY: F(6 * GI)},
            asked={MEMORY: F(3 * GI)},
            where="spec.quota",
        )
    assert "by 1Gi" in caught.value.message
    assert caught.value.details["exceededBy"] == "1Gi"


def test_check_within_accepts_exactly_full() -> None:
    # 0.1 + 0.2 == 0.3 only with exact arithmetic.
    check_within(
        "project web",
        "tenant acme",
        limit={CPU: F(3, 10), "pods": F(10)},
        others={CPU: F(1, 10), "pods": F(7)},
        asked={CPU: F(2, 10), "pods": F(3)},
        where="spec.quota",
    )


def test_check_within_counts_a_resource_others_do_not_hold_as_zero() -> None:
    check_within("p", "t", limit={"pods": F(5)}, others={}, asked={"pods": F(5)}, where="q")
    with pytest.raises(QuotaExceededError) as caught:
        check_within("p", "t", limit={"pods": F(5)}, others={}, asked={"pods": F(6)}, where="q")
    assert caught.value.details["exceededBy"] == "1"


def test_check_within_skips_resources_listed_as_unlimited() -> None:
    check_within(
        "tenant acme",
        "the platform's capacity",
        limit={CPU: F(1)},
        others={CPU: F(1), "requests.nvidia.com/gpu": F(100)},
        asked={"requests.nvidia.com/gpu": F(8), "count/deployments.apps": F(50)},
        where="spec.quota",
        unlimited={"requests.nvidia.com/gpu", "count/deployments.apps"},
    )


def test_check_within_still_checks_resources_not_listed_as_unlimited() -> None:
    with pytest.raises(QuotaExceededError) as caught:
        check_within(
            "tenant acme",
            "the platform's capacity",
            limit={CPU: F(1)},
            others={},
            asked={CPU: F(2), "requests.nvidia.com/gpu": F(8)},
            where="spec.quota",
            unlimited={"requests.nvidia.com/gpu"},
        )
    assert caught.value.field == f"spec.quota.{CPU}"


def test_check_within_refuses_a_resource_the_limit_does_not_name() -> None:
    with pytest.raises(QuotaExceededError) as caught:
        check_within(
            "project web",
            "tenant acme",
            limit={CPU: F(4)},
            others={},
            asked={CPU: F(1), "pods": F(1)},
            where="spec.quota",
        )
    assert caught.value.field == "spec.quota.pods"
    assert "no quota for pods" in caught.value.message


# --- check_not_below -------------------------------------------------------------------------


def test_check_not_below_refuses_a_quota_under_what_is_in_use() -> None:
    with pytest.raises(QuotaExceededError) as caught:
        check_not_below(
            "tenant acme",
            asked={CPU: F(2), "pods": F(10)},
            floor={CPU: F(5, 2), "pods": F(10)},
            floor_name="what its projects hold",
            where="spec.quota",
        )
    error = caught.value
    assert error.field == f"spec.quota.{CPU}"
    assert "by 500m" in error.message
    assert error.details["shortBy"] == "500m"


def test_check_not_below_refuses_dropping_a_resource_that_is_in_use() -> None:
    with pytest.raises(QuotaExceededError) as caught:
        check_not_below(
            "tenant acme",
            asked={CPU: F(4)},
            floor={CPU: F(1), MEMORY: F(GI)},
            floor_name="what its projects hold",
            where="spec.quota",
        )
    assert caught.value.field == f"spec.quota.{MEMORY}"
    assert "1Gi" in caught.value.message


def test_check_not_below_accepts_equal_higher_and_unused_resources() -> None:
    check_not_below(
        "tenant acme",
        asked={CPU: F(5, 2), "pods": F(20)},
        floor={CPU: F(5, 2), "pods": F(10), MEMORY: F(0)},
        floor_name="what its projects hold",
        where="spec.quota",
    )


# --- split_project_quota ---------------------------------------------------------------------


def _env(name: str, *clusters: str, **quota: str) -> Environment:
    return Environment(name=name, clusters=list(clusters), quota=quota)


PROJECT_QUOTA = {CPU: F(3), MEMORY: F(4 * GI), "pods": F(10)}


def test_split_over_two_environments_on_one_and_two_clusters() -> None:
    shares = split_project_quota(PROJECT_QUOTA, [_env("dev", "c1"), _env("prod", "c1", "c2")])
    assert shares == {
        ("dev", "c1"): {CPU: F(3, 2), MEMORY: F(2 * GI), "pods": F(5)},
        ("prod", "c1"): {CPU: F(3, 4), MEMORY: F(GI), "pods": F(3)},
        ("prod", "c2"): {CPU: F(3, 4), MEMORY: F(GI), "pods": F(2)},
    }


def test_environment_quota_takes_what_it_names_and_the_rest_is_split() -> None:
    envs = [
        _env("dev", "c1", cpu="500m"),
        _env("staging", "c1"),
        _env("prod", "c1", "c2", pods="6"),
    ]
    shares = split_project_quota(PROJECT_QUOTA, envs)
    # cpu: dev names 500m, the other 2500m goes to staging and prod (1250m each).
    assert shares[("dev", "c1")][CPU] == F(1, 2)
    assert shares[("staging", "c1")][CPU] == F(5, 4)
    assert shares[("prod", "c1")][CPU] + shares[("prod", "c2")][CPU] == F(5, 4)
    # pods: prod names 6 (3 per cluster); dev and staging split the other 4.
    assert shares[("prod", "c1")]["pods"] == shares[("prod", "c2")]["pods"] == 3
    assert shares[("dev", "c1")]["pods"] == shares[("staging", "c1")]["pods"] == 2
    # memory: nobody names it, so it is split three ways, in whole bytes, losing none.
    memory = [s[MEMORY] for s in shares.values()]
    assert all(m.denominator == 1 for m in memory)
    for resource, whole in PROJECT_QUOTA.items():
        assert sum(s[resource] for s in shares.values()) == whole


def test_environment_quota_may_take_the_whole_resource() -> None:
    shares = split_project_quota(PROJECT_QUOTA, [_env("dev", "c1"), _env("prod", "c1", pods="10")])
    assert shares[("dev", "c1")]["pods"] == 0
    assert shares[("prod", "c1")]["pods"] == 10


def test_environment_quotas_over_the_project_are_refused() -> None:
    envs = [_env("dev", "c1", cpu="2"), _env("prod", "c1", "c2", cpu="1500m")]
    with pytest.raises(QuotaExceededError) as caught:
        split_project_quota(PROJECT_QUOTA, envs)
    assert caught.value.field == "spec.environments"
    assert "by 500m" in caught.value.message


def test_environment_quota_for_a_resource_the_project_lacks_is_refused() -> None:
    envs = [_env("dev", "c1"), _env("prod", "c1", **{"nvidia.com/gpu": "1"})]
    with pytest.raises(QuotaExceededError) as caught:
        split_project_quota(PROJECT_QUOTA, envs)
    assert caught.value.field == "spec.environments[1].quota"


def test_environment_quota_with_a_bad_name_is_invalid() -> None:
    with pytest.raises(InvalidError) as caught:
        split_project_quota(PROJECT_QUOTA, [_env("dev", "c1", cpus="1")])
    assert caught.value.field == "spec.environments[0].quota.cpus"


ENV_NAMES = ["dev", "test", "staging", "prod"]
CLUSTERS = ["c1", "c2", "c3", "c4", "c5"]


@st.composite
def layouts(draw: st.DrawFn) -> list[Environment]:
    count = draw(st.integers(1, 4))
    return [
        Environment(
            name=name,
            clusters=draw(st.lists(st.sampled_from(CLUSTERS), min_size=1, max_size=3, unique=True)),
        )
        for name in ENV_NAMES[:count]
    ]


@settings(max_examples=300, deadline=None)
@given(
    millicores=st.integers(0, 10**6),
    microcores=st.integers(0, 999),
    memory=st.integers(0, 2**45),
    pods=st.integers(0, 5000),
    environments=layouts(),
)
def test_namespace_shares_add_up_to_the_project_quota(
    millicores: int, microcores: int, memory: int, pods: int, environments: list[Environment]
) -> None:
    cpu = F(millicores, 1000) + F(microcores, 10**6)
    quota = {CPU: cpu, MEMORY: F(memory), "pods": F(pods)}
    shares = split_project_quota(quota, environments)

    assert set(shares) == {(e.name, c) for e in environments for c in e.clusters}
    expected = {
        CPU: F(math.floor(cpu * 1000), 1000),  # cpu is handed out in whole millis
        MEMORY: F(memory),
        "pods": F(pods),
    }
    for resource, whole in expected.items():
        parts = [share[resource] for share in shares.values()]
        assert all(part >= 0 for part in parts), resource
        assert sum(parts) == whole, resource
    for share in shares.values():
        assert (share[CPU] * 1000).denominator == 1
        assert share[MEMORY].denominator == 1
        assert share["pods"].denominator == 1


# -- isolation inside the clusters (issue: Trust, part 1) ----------------------------------


def test_a_namespace_limits_everything_the_tenant_limits():
    hard = namespace_hard(
        {"requests.cpu": Fraction(1, 2)},
        {"requests.cpu": Fraction(4), "requests.memory": Fraction(8), "pods": Fraction(20)},
    )
    assert hard == {
        "requests.cpu": Fraction(1, 2),
        "requests.memory": Fraction(0),
        "pods": Fraction(0),
        "services.nodeports": Fraction(0),
        "services.loadbalancers": Fraction(0),
    }


@pytest.mark.parametrize("name", ["kube", "kube-x", "wharf", "wharfish", "default", "system1"])
def test_tenant_names_that_look_like_the_systems_are_refused(name):
    with pytest.raises(InvalidError) as refused:
        check_tenant_name(name)
    assert refused.value.field == "metadata.name"


def test_pod_security_defaults_to_baseline_and_environments_may_tighten():
    spec = ProjectSpec.model_validate(
        {
            "environments": [
                {"name": "dev", "clusters": ["a"]},
                {"name": "prod", "clusters": ["a"], "podSecurity": "restricted"},
            ]
        }
    )
    assert spec.pod_security("dev") == "baseline"
    assert spec.pod_security("prod") == "restricted"
    labels = pod_security_labels("restricted")
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce-version"] == "latest"


def test_pool_nodes_are_labelled_with_every_granted_tenant():
    node = {"metadata": {"name": "n1", "labels": {"zone": "a", "kind": "gpu"}}}
    pools = [
        GrantedPool(name, NodePoolSpec(cluster="c1", nodeSelector=selector), (tenant,))
        for name, selector, tenant in [
            ("zone-a", {"zone": "a"}, "t1"),
            ("gpus", {"kind": "gpu"}, "t2"),
            ("other", {"zone": "b"}, "t3"),
        ]
    ]
    assert pool_labels_of(pools, node) == {
        "node-restriction.kubernetes.io/wharf-node-pool": "gpus",
        "node-restriction.kubernetes.io/wharf-tenant-t1": "true",
        "node-restriction.kubernetes.io/wharf-tenant-t2": "true",
    }
    labelled = {
        "metadata": {
            "name": "n1",
            "resourceVersion": "1",
            "labels": {**node["metadata"]["labels"], **pool_labels_of(pools, node)},
        }
    }
    assert tainted_node(labelled, [], pool_labels_of(pools, node)) is None
    body = tainted_node(labelled, [], {})
    assert body is not None
    assert body["metadata"]["labels"] == {}


def test_tenant_roles_hold_nothing_that_escalates():
    forbidden = {
        "rolebindings",
        "roles",
        "networkpolicies",
        "resourcequotas",
        "limitranges",
        "serviceaccounts",
        "serviceaccounts/token",
        "namespaces",
    }
    for role in cluster_roles():
        for rule in role["rules"]:
            if set(rule["verbs"]) - {"get", "list", "watch"}:
                assert not forbidden & set(rule["resources"]), (role["metadata"], rule)
            assert "impersonate" not in rule["verbs"]
            assert not {"escalate", "bind"} & set(rule["verbs"])
            assert "*" not in rule["resources"]


def test_tenant_names_may_not_hold_the_namespace_separator():
    with pytest.raises(InvalidError):
        check_tenant_name("a--b")
    assert namespace_name("acme", "labs-x", "dev") != namespace_name("acme-labs", "x", "dev")
