"""A step that sets the canary is recorded with its entry, in one write of the release row,
before its objects are applied: the write that ends a step does not need a second write
before the next step's apply (each is a transaction on the release row on a step's path)."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from types import SimpleNamespace
from typing import Any, cast

from wharf.apps.model import CanaryStep
from wharf.releases.controller import ReleaseController
from wharf.releases.service import now

STEPS = [
    CanaryStep(setReplicas=1),
    CanaryStep.model_validate({"pause": {"duration": 2}}),
    CanaryStep(setWeight=40),
    CanaryStep.model_validate({"pause": {}}),
]


class Recording(ReleaseController):
    """The controller's step logic, with the row's stores and the clusters' applies noted."""

    def __init__(self) -> None:
        super().__init__(cast(Any, None), cast(Any, None), cast(Any, None), None, lambda _: None)
        self.stored: list[dict[str, Any]] = []
        self.applied: list[tuple[int | None, int, dict[str, Any] | None]] = []

    async def _store(self, release: Any) -> None:
        self.stored.append(copy.deepcopy(release.clusters["lab1"]))

    async def _apply_canary(
        self, key: Any, snap: Any, name: str, replicas: int | None, weight: int
    ) -> None:
        # What the row said when the cluster was written: the apply must be recorded first.
        self.applied.append((replicas, weight, self.stored[-1] if self.stored else None))

    async def _shifted(self, key: Any, snap: Any, name: str, weight: int) -> bool:
        return True


def advance(cluster: dict[str, Any]) -> Recording:
    controller = Recording()
    strategy = SimpleNamespace(type="canary", canary=SimpleNamespace(steps=STEPS))
    snap = cast(Any, SimpleNamespace(spec=SimpleNamespace(strategy=strategy)))
    release = cast(
        Any,
        SimpleNamespace(
            tenant="acme",
            application="web",
            revision=2,
            stable_revision=1,
            phase="Progressing",
            clusters={"lab1": cluster},
            events=[],
        ),
    )

    async def run() -> None:
        await controller._advance_cluster(("acme", "web"), snap, release, "lab1")
        await controller.stop()

    asyncio.run(run())
    return controller


def test_the_first_step_is_entered_and_recorded_in_one_write() -> None:
    controller = advance({"phase": "Pending", "step": 0})
    # Entered step 0 with its apply recorded, applied; entered the pause.
    assert [s["step"] for s in controller.stored] == [0, 1]
    replicas, weight, recorded = controller.applied[0]
    assert (replicas, weight) == (1, 0)
    assert recorded is not None
    assert (recorded["step"], recorded["applying"], recorded["weight"]) == (0, 0, 0)
    assert "applying" not in controller.stored[-1]


def test_a_pause_that_ended_enters_the_next_step_in_one_write_before_its_apply() -> None:
    long_ago = (now() - dt.timedelta(seconds=10)).isoformat()
    cluster = {"phase": "Progressing", "step": 1, "stepStartedAt": long_ago, "weight": 0}
    controller = advance(cluster)
    # The old code wrote step 2 twice: entered, then its apply recorded.
    assert [s["step"] for s in controller.stored] == [2, 3, 3]
    replicas, weight, recorded = controller.applied[0]
    assert (replicas, weight) == (None, 40)
    assert recorded is not None
    assert (recorded["step"], recorded["applying"], recorded["weight"]) == (2, 2, 40)
    assert controller.stored[-1]["phase"] == "WaitingPromote"


def test_a_step_recorded_before_a_restart_is_applied_without_another_write() -> None:
    at = now().isoformat()
    cluster = {"phase": "Progressing", "step": 2, "stepStartedAt": at, "applying": 2, "weight": 40}
    controller = advance(cluster)
    assert controller.applied == [(None, 40, None)]  # nothing more to record first
    assert [s["step"] for s in controller.stored] == [3, 3]  # entered the pause; waits there
