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


def test_a_burst_of_parallel_guesses_gets_no_more_than_the_allowance():
    throttle = LoginThrottle(Clock(), free_per_user=3, free_per_address=100)
    # 50 attempts in flight at once, none answered yet: only the allowance is let through.
    admitted = [throttle.admit("ann", f"10.0.0.{i}") == 0 for i in range(50)]
    assert admitted.count(True) == 3
    for _ in range(3):
        throttle.failed("ann", "10.0.0.1")
    assert throttle.admit("ann", "10.0.0.1") == 1  # the allowance is spent: locked


def test_an_admitted_success_frees_its_place_for_the_address():
    throttle = LoginThrottle(Clock(), free_per_user=100, free_per_address=2)
    for _ in range(5):
        assert throttle.admit("mine", "10.0.0.9") == 0
        throttle.succeeded("mine", "10.0.0.9")


def test_a_flood_of_made_up_names_does_not_push_a_locked_user_out():
    clock = Clock()
    throttle = LoginThrottle(clock, free_per_user=3, free_per_address=10**9, capacity=100)
    for _ in range(4):
        throttle.failed("ann", "10.0.0.1")
    for i in range(1000):
        throttle.failed(f"name{i}", "10.0.0.1")
    assert len(throttle._counts) <= 100
    assert throttle.retry_after("ann", "10.0.0.2") > 0


def test_past_the_allowance_a_lock_that_ran_out_admits_one_attempt_at_a_time():
    clock = Clock()
    throttle = LoginThrottle(clock, free_per_user=2, free_per_address=100)
    for _ in range(2):
        throttle.failed("ann", "10.0.0.1")
    clock.now += 2
    assert throttle.admit("ann", "10.0.0.1") == 0
    assert throttle.admit("ann", "10.0.0.1") == 1  # the first is not answered yet
    throttle.failed("ann", "10.0.0.1")
    assert throttle.admit("ann", "10.0.0.1") == 2  # and its failure doubled the lock


def test_an_ipv6_host_cannot_spray_passwords_from_a_fresh_address_each_time():
    """One IPv6 host holds a whole /64: each of its addresses is the same address here (and
    an IPv4 address written as IPv6 is that IPv4 address)."""
    throttle = LoginThrottle(Clock(), free_per_user=100, free_per_address=4)
    for i in range(4):
        assert throttle.admit(f"user{i}", f"2001:db8:1:2::{i + 1:x}") == 0
        throttle.failed(f"user{i}", f"2001:db8:1:2::{i + 1:x}")
    assert throttle.admit("someone-else", "2001:db8:1:2:aaaa:bbbb:cccc:dddd") == 1
    assert throttle.admit("someone-else", "2001:db8:1:3::1") == 0  # another network
    for i in range(4):
        throttle.failed(f"v4-{i}", "192.0.2.7")
    assert throttle.admit("someone-else", "::ffff:192.0.2.7") == 1


def test_successes_from_an_ipv6_host_give_back_their_places():
    throttle = LoginThrottle(Clock(), free_per_user=5, free_per_address=3)
    for i in range(10):
        assert throttle.admit("ann", f"2001:db8::{i + 1:x}") == 0
        throttle.succeeded("ann", f"2001:db8::{i + 1:x}")
