"""This process's view of its leases: held only until its own deadline, new on a new epoch."""

from __future__ import annotations

import time

import pytest

from wharf.core.leases import Lease, LeaseBook, LeaseLost


def test_a_lease_counts_as_held_only_until_its_deadline() -> None:
    book = LeaseBook("r1")
    assert book.lease("cluster/a") is None
    assert book.hold("cluster/a", 3, time.monotonic() + 60) is True
    assert book.lease("cluster/a") == Lease("cluster/a", "r1", 3)
    book.hold("cluster/b", 1, time.monotonic() - 1)  # a renewal that came too late
    assert book.lease("cluster/b") is None
    assert book.names() == ["cluster/a"]


def test_a_renewal_is_not_news_and_a_new_epoch_is() -> None:
    book = LeaseBook("r1")
    book.hold("platform", 1, time.monotonic() + 60)
    assert book.hold("platform", 1, time.monotonic() + 60) is False
    assert book.hold("platform", 2, time.monotonic() + 60) is True  # lost and taken again
    book.drop("platform")
    assert book.lease("platform") is None


def test_the_sole_process_holds_everything_unfenced() -> None:
    book = LeaseBook("only", sole=True)
    assert book.lease("cluster/x") == Lease("cluster/x", "only", 0, fenced=False)


def test_a_cluster_write_goes_on_only_under_the_same_epoch() -> None:
    book = LeaseBook("r1")
    book.hold("cluster/a", 1, time.monotonic() + 60)
    first = book.lease("cluster/a")
    assert first is not None
    book.check(first)  # still held: the write goes on
    book.hold("cluster/a", 2, time.monotonic() + 60)  # lost and taken again meanwhile
    with pytest.raises(LeaseLost):
        book.check(first)
    book.drop("cluster/a")
    with pytest.raises(LeaseLost):
        book.check(Lease("cluster/a", "r1", 2))
