"""The release controller stores a release's one row while a wave's clusters advance at once:
each cluster's step is kept, no pass is thrown away as stale by its own other clusters, and
the clusters' changes made while a write is under way go out in one write after it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from wharf.releases.controller import ReleaseController
from wharf.releases.service import create_release, latest_release
from wharf.store import Database, migrate

CLUSTERS = ("lab1", "lab2", "edge")
STEPS = 5


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate(database)
    yield database
    database.dispose()


def test_a_waves_clusters_store_the_release_one_after_another(db: Database):
    state = {
        "waves": [list(CLUSTERS)],
        "wave": 0,
        "clusters": {c: {"phase": "Progressing", "step": 0} for c in CLUSTERS},
    }
    with db.session() as session:
        release = create_release(session, "acme", "web", 2, 1, state)
    first = release.version
    service = cast(Any, SimpleNamespace(db=db))
    controller = ReleaseController(service, cast(Any, None), cast(Any, None), None, lambda _: None)

    async def advance(cluster: str) -> None:
        for step in range(1, STEPS + 1):
            release.clusters[cluster]["step"] = step
            await controller._store(release)

    async def wave() -> None:
        await asyncio.gather(*(advance(c) for c in CLUSTERS))
        await controller.stop()

    asyncio.run(wave())
    with db.reader() as session:
        stored = latest_release(session, "acme", "web")
    assert stored is not None
    assert stored.version == release.version
    # Changes asked to be stored while a write was under way went out together in one write
    # (each caller waited for a write holding its change): fewer writes than changes.
    assert stored.version - first < len(CLUSTERS) * STEPS
    assert {c: s["step"] for c, s in stored.clusters.items()} == dict.fromkeys(CLUSTERS, STEPS)
