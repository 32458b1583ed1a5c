"""Login back-off: free failures, then doubling locks per username and per address."""

from wharf.identity.throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_past_the_allowance_lock_for_twice_as_long_each_time():
    clock = Clock()
    throttle = LoginThrottle(clock, free_per_user=3, free_per_address=100)
    for _ in range(2):
        assert throttle.retry_after("ann", "10.0.0.1") == 0
        throttle.failed("ann", "10.0.0.1")
    assert throttle.retry_after("ann", "10.0.0.1") == 0
    waits = []
    for _ in range(4):
        throttle.failed("ann", "10.0.0.1")
        waits.append(throttle.retry_after("ann", "10.0.0.2"))  # the user is locked anywhere
        clock.now += waits[-1]
    assert waits == [1, 2, 4, 8]
    throttle.succeeded("ann")
    assert throttle.retry_after("ann", "10.0.0.1") == 0


def test_an_address_is_locked_across_usernames_and_a_success_does_not_clear_it():
    clock = Clock()
    throttle = LoginThrottle(clock, free_per_user=100, free_per_address=4)
    for i in range(4):
        throttle.failed(f"user{i}", "10.0.0.9")
    throttle.succeeded("mine")
    assert throttle.retry_after("someone-else", "10.0.0.9") == 1
    assert throttle.retry_after("someone-else", "10.0.0.10") == 0


def test_the_lock_has_a_ceiling_and_old_counts_are_forgotten():
    clock = Clock()
    throttle = LoginThrottle(clock, free_per_user=0, ceiling_seconds=60)
    for _ in range(30):
        throttle.failed("bob", "a")
    assert throttle.retry_after("bob", "b") == 60
    clock.now += 121
    assert throttle.retry_after("bob", "b") == 0


def test_made_up_names_cannot_grow_it_past_its_capacity():
    throttle = LoginThrottle(Clock(), capacity=100)
    for i in range(1000):
        throttle.failed(f"name{i}", f"addr{i}")
    assert len(throttle._counts) == 100
