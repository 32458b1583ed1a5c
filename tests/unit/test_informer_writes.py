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


def _quota(version: str, hard: str = "10", used: str | None = None) -> dict[str, Any]:
    meta = {"name": "quota", "namespace": "acme--shop-dev", "resourceVersion": version}
    obj: dict[str, Any] = {"metadata": meta, "spec": {"hard": {"pods": hard}}}
    if used is not None:
        obj["status"] = {"hard": {"pods": hard}, "used": {"pods": used}}
    return obj


def _split_cache() -> tuple[Informer, list[str], list[str]]:
    changes: list[str] = []
    statuses: list[str] = []
    cache = Informer(
        cast(Any, None),
        ConfigMap,
        on_event=lambda e, o: changes.append(o["metadata"]["resourceVersion"]),
        on_status=lambda e, o: statuses.append(o["metadata"]["resourceVersion"]),
    )
    cache._take("ADDED", _quota("4"))
    changes.clear()
    return cache, changes, statuses


def test_a_change_of_the_status_alone_is_told_apart() -> None:
    # The cluster counting a quota's use changes nothing Wharf wrote: a placement reader takes
    # it after the changes waiting (1,000 projects placed had their quotas' counts queue a
    # round of them ahead of the next edit).
    cache, changes, statuses = _split_cache()
    cache._take("MODIFIED", _quota("5", used="0"))  # the status appears
    cache._take("MODIFIED", _quota("6", used="3"))  # and moves
    assert (changes, statuses) == ([], ["5", "6"])


@pytest.mark.parametrize(
    "edit",
    [
        lambda q: q["spec"]["hard"].update(pods="11"),
        lambda q: q["metadata"].update(labels={"wharf.io/tenant": "other"}),
        lambda q: q["metadata"].update(deletionTimestamp="2026-12-01T00:00:00Z"),
        lambda q: q.update(kind="Other"),
    ],
    ids=["spec", "labels", "deleting", "new field"],
)
def test_anything_besides_the_status_is_a_change(edit: Any) -> None:
    cache, changes, statuses = _split_cache()
    changed = _quota("5", used="0")
    edit(changed)
    cache._take("MODIFIED", changed)
    cache._take("DELETED", _quota("6", used="0"))
    assert (changes, statuses) == (["5", "6"], [])


def test_without_a_status_reader_every_change_is_told_as_one() -> None:
    told: list[str] = []
    cache = Informer(
        cast(Any, None), ConfigMap, on_event=lambda e, o: told.append(o["metadata"]["name"])
    )
    cache._take("ADDED", _quota("4"))
    cache._take("MODIFIED", _quota("5", used="0"))
    assert told == ["quota", "quota"]


def test_a_count_that_comes_while_the_write_is_under_way_is_told_as_a_status() -> None:
    # The lab's controller manager counts a new quota's use within milliseconds: its event
    # may come before the write's answer, and is held until the write ends.
    cache, changes, statuses = _split_cache()
    with cache.writing(_quota("4", hard="11")):
        cache._take("MODIFIED", _quota("5", hard="11"))  # the echo of ours
        cache._take("MODIFIED", _quota("6", hard="11", used="0"))  # the count
        cache.remember(_quota("5", hard="11"))
    assert (changes, statuses) == ([], ["6"])


def test_someone_elses_edit_while_the_write_is_under_way_is_a_change() -> None:
    cache, changes, statuses = _split_cache()
    with cache.writing(_quota("4", hard="11")):
        cache.remember(_quota("5", hard="11"))
        cache._take("MODIFIED", _quota("5", hard="11"))
        cache._take("MODIFIED", _quota("6", hard="99", used="0"))  # theirs, and a count
    assert (changes, statuses) == (["6"], [])
