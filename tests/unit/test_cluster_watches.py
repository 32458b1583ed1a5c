"""A cluster's set of watches is replaced by one worker at a time: two workers that saw a new
fingerprint at once each started a set, and the first set ran on, owned by nobody, never
stopped (a registered cluster whose served kinds come and go could repeat it at will)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from lightkube import operators

from wharf.kube.informer import ClusterWatches, matches


class _Watch:
    def __init__(self, name: str) -> None:
        self.name = name
        self.stopped = False

    async def run(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.stopped = True
            raise


def test_two_workers_replacing_a_clusters_watches_at_once_leave_none_running_unowned() -> None:
    made: list[_Watch] = []

    def make(name: str) -> Any:
        def start() -> list[Any]:
            made.append(_Watch(name))
            return [made[-1]]

        return start

    async def scenario() -> list[str]:
        watches = ClusterWatches()
        await watches.ensure("lab1", "v1", make("first"))
        await asyncio.gather(
            watches.ensure("lab1", "v2", make("a")), watches.ensure("lab1", "v2", make("b"))
        )
        assert [w.name for w in watches.informers("lab1")] in (["a"], ["b"])
        await watches.stop()
        await asyncio.sleep(0)
        return [w.name for w in made if not w.stopped]

    assert asyncio.run(scenario()) == []


def test_a_cached_objects_labels_are_matched_like_a_label_selector() -> None:
    obj = {"metadata": {"labels": {"a": "1", "b": "2"}}}
    assert matches(obj, {"a": "1"})
    assert not matches(obj, {"a": "2"})
    assert matches(obj, {"b": operators.exists(), "c": operators.not_exists()})
    assert not matches(obj, {"c": operators.exists()})
    assert not matches(obj, {"a": operators.not_exists()})
    assert matches({"metadata": {}}, {"c": operators.not_exists()})
    with pytest.raises(TypeError):  # an operator a cache cannot evaluate is refused, not guessed
        matches(obj, {"a": operators.in_(["1"])})
