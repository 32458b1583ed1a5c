"""How many followed log streams one user may hold open: each holds watches on the clusters,
opened with Wharf's credentials, so one user (or one stolen token) cannot open them without end."""

from __future__ import annotations

import pytest

from wharf.core.errors import ThrottledError
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
    with pytest.raises(ThrottledError) as refused:
        slots.take("dave", 60)
    assert refused.value.status == 429
    assert "already follows 2 log streams" in refused.value.message
    # The first slot lapses 60 s + grace after it was taken, 10 s ago.
    assert refused.value.headers() == {"Retry-After": str(int(50 + SLOT_GRACE_SECONDS))}
    assert slots.held("dave") == 2
    # Another user is not held back by dave's streams.
    slots.take("erin", 60)
    assert slots.held("erin") == 1


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
