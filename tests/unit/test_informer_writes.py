"""A watch cache and Wharf's own writes: the write's echo through the watch wakes nobody,
whichever comes first (the echo or the write's answer); anything else seen of the object
while the write is under way is told when it ends. The cache's bookkeeping only: the watch
itself runs against the lab's API servers in tests/integration/test_watch_cache.py."""

from __future__ import annotations

from typing import Any, cast

import pytest
from lightkube.resources.core_v1 import ConfigMap

from wharf.kube.informer import Informer, _version


def _cm(version: str, data: str = "a") -> dict[str, Any]:
    meta = {"name": "web", "namespace": "acme--shop-dev", "resourceVersion": version}
    return {"metadata": meta, "data": {"k": data}}


def _cache() -> tuple[Informer, list[tuple[str, str]]]:
    told: list[tuple[str, str]] = []
    cache = Informer(
        cast(Any, None),  # the client is never asked: only events and answers are fed in
        ConfigMap,
        on_event=lambda e, o: told.append((e, o["metadata"]["resourceVersion"])),
    )
    cache._take("ADDED", _cm("4"))
    told.clear()
    return cache, told


def test_the_echo_before_the_answer_wakes_nobody() -> None:
    cache, told = _cache()
    with cache.writing(_cm("4", "b")):
        cache._take("MODIFIED", _cm("5", "b"))  # the echo comes first
        cache.remember(_cm("5", "b"))
    assert told == []
    assert cache.get("acme--shop-dev", "web") == _cm("5", "b")


def test_the_echo_after_the_answer_wakes_nobody() -> None:
    cache, told = _cache()
    with cache.writing(_cm("4", "b")):
        cache.remember(_cm("5", "b"))
    cache._take("MODIFIED", _cm("5", "b"))
    assert told == []


def test_someone_elses_change_during_the_write_is_told_when_it_ends() -> None:
    cache, told = _cache()
    with cache.writing(_cm("4", "b")):
        cache._take("MODIFIED", _cm("5", "b"))  # ours
        cache._take("MODIFIED", _cm("6", "tampered"))  # a tenant's edit right after
        cache.remember(_cm("5", "b"))
        assert told == []  # held while the write is under way
    assert told == [("MODIFIED", "6")]
    assert cache.get("acme--shop-dev", "web") == _cm("6", "tampered")


def test_a_delete_seen_before_the_answer_is_not_undone_by_it() -> None:
    # The review's finding: the answer put the deleted object back in the cache, and the next
    # reconcile saw it "as wanted" and wrote nothing for minutes.
    cache, told = _cache()
    with cache.writing(_cm("4", "b")):
        cache._take("DELETED", _cm("6", "b"))
        cache.remember(_cm("5", "b"))
    assert cache.get("acme--shop-dev", "web") is None
    assert told == [("DELETED", "6")]


def test_a_failed_write_tells_all_it_held() -> None:
    cache, told = _cache()

    def write() -> None:
        with cache.writing(_cm("4", "b")):
            cache._take("MODIFIED", _cm("5", "c"))
            raise RuntimeError("the cluster went away")

    with pytest.raises(RuntimeError):
        write()
    assert told == [("MODIFIED", "5")]


@pytest.mark.parametrize("version", ["²", "1" * 5000, "", "12a"])
def test_a_version_that_is_no_number_is_none_and_raises_nothing(version: str) -> None:
    assert _version({"metadata": {"resourceVersion": version}}) is None
