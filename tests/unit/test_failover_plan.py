"""Failover's arithmetic: where a lost cluster's replicas go, and what quota holds back."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from wharf.apps.model import UNBOUNDED, failover_plan, room_in

SPREAD = {"edge": 2, "lab1": 2, "lab2": 2}


def test_the_lost_share_goes_evenly_to_the_others():
    plan = failover_plan(SPREAD, {"edge"}, {"lab1": 9, "lab2": 9}, 1)
    assert plan.replicas == {"edge": 2, "lab1": 3, "lab2": 3}
    assert plan.out == ("edge",)
    assert plan.moved == {"lab1": 1, "lab2": 1}
    assert plan.heldBack == 0


def test_nothing_moves_while_every_cluster_is_in():
    plan = failover_plan(SPREAD, set(), {}, 1)
    assert plan.replicas == SPREAD
    assert not plan.out
    assert not plan.moved


def test_quota_holds_back_what_does_not_fit():
    plan = failover_plan(SPREAD, {"edge"}, {"lab1": 0, "lab2": 1}, 1)
    assert plan.replicas == {"edge": 2, "lab1": 2, "lab2": 3}
    assert plan.heldBack == 1


def test_too_few_clusters_left_moves_nothing():
    plan = failover_plan(SPREAD, {"edge", "lab1"}, {"lab2": 9}, 2)
    assert plan.replicas == SPREAD
    assert plan.heldBack == 4


def test_a_cluster_outside_the_spread_is_no_concern():
    assert failover_plan(SPREAD, {"other"}, {}, 1).replicas == SPREAD


@given(
    st.dictionaries(st.sampled_from("abcde"), st.integers(0, 20), min_size=1),
    st.sets(st.sampled_from("abcde")),
    st.dictionaries(st.sampled_from("abcde"), st.integers(0, 30)),
)
def test_replicas_are_moved_never_made_and_rooms_hold(spread, out, room):
    plan = failover_plan(spread, out, room, 1)
    lost = sum(n for c, n in spread.items() if c in out)
    gained = sum(plan.moved.values())
    assert gained + plan.heldBack == (lost if out & set(spread) else 0)
    for cluster, extra in plan.moved.items():
        assert cluster not in out
        assert extra <= room.get(cluster, 0)
        assert plan.replicas[cluster] == spread[cluster] + extra


def test_room_is_what_the_quota_has_left_by_its_tightest_resource():
    quota = {"status": {"hard": {"requests.cpu": "2", "pods": "10"}, "used": {"requests.cpu": "1"}}}
    per_replica = {"requests.cpu": Fraction(1, 4), "pods": Fraction(1)}
    assert room_in(quota, per_replica) == 4
    assert room_in({"status": {"hard": {"cpu": "500m"}, "used": {"cpu": "500m"}}}, per_replica) == 0
    assert room_in(None, per_replica) == UNBOUNDED
