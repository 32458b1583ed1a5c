"""How many followed log streams one user may hold open: each holds a watch per container on
the clusters, opened with Wharf's credentials, so one user (or one stolen token) cannot open
them without end, neither as many streams nor as streams of many containers."""

from __future__ import annotations

import pytest

from wharf.core.errors import InvalidError, ThrottledError
from wharf.logs.service import SLOT_GRACE_SECONDS, FollowSlots


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_more_than_the_limit_is_refused_with_when_to_try_again():
    clock = Clock()
    slots = FollowSlots(limit=2, clock=clock)
    slots.take("dave", 60)
    clock.now += 10
    slots.take("dave", 60)
    for attempt in (lambda: slots.take("dave", 60), lambda: slots.check("dave")):
        with pytest.raises(ThrottledError) as refused:
            attempt()
        assert refused.value.status == 429
        assert "already follows 2 log streams" in refused.value.message
        # The first slot lapses 60 s + grace after it was taken, 10 s ago.
        assert refused.value.headers() == {"Retry-After": str(int(50 + SLOT_GRACE_SECONDS))}
    assert slots.held("dave") == 2
    # Another user is not held back by dave's streams.
    slots.check("erin")
    slots.take("erin", 60)
    assert slots.held("erin") == 1


def test_streams_weigh_the_containers_they_follow():
    slots = FollowSlots(limit=8, containers=64, clock=Clock())
    slots.take("dave", 60, containers=50)
    with pytest.raises(ThrottledError) as refused:
        slots.take("dave", 60, containers=50)
    assert "already follows 50 containers' logs; 50 more" in refused.value.message
    slots.take("dave", 60, containers=14)
    # More than a user may follow at all is no matter of waiting: follow less.
    with pytest.raises(InvalidError) as invalid:
        slots.take("erin", 60, containers=65)
    assert invalid.value.field == "pod"
    assert slots.held("erin") == 0


def test_a_slot_given_back_is_free_again_and_twice_changes_nothing():
    slots = FollowSlots(limit=1, clock=Clock())
    give_back = slots.take("dave", 60)
    give_back()
    give_back()
    assert slots.held("dave") == 0
    slots.take("dave", 60)
    with pytest.raises(ThrottledError):
        slots.take("dave", 60)


def test_a_slot_never_given_back_lapses_after_its_streams_bound():
    clock = Clock()
    slots = FollowSlots(limit=1, clock=clock)
    slots.take("dave", 30)  # its stream's body never ran: nobody gives it back
    clock.now += 30 + SLOT_GRACE_SECONDS - 0.5
    with pytest.raises(ThrottledError):
        slots.take("dave", 30)
    clock.now += 1
    assert slots.held("dave") == 0
    slots.take("dave", 30)
