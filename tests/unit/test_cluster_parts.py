"""A project's or application's status is written in parts, one per cluster, each by the
replica holding that cluster: a part another replica wrote is kept, a part nobody wrote yet
says so (Pending) instead of being left out of the sum."""

from __future__ import annotations

import datetime as dt
from typing import Any

from wharf.apps.controller import _status
from wharf.store.resources import StoredResource
from wharf.tenancy.controller import _project_status

NOW = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)


def _stored(kind: str, spec: dict[str, Any], status: dict[str, Any]) -> StoredResource:
    return StoredResource(1, kind, "t", "x", "uid", 2, 5, {}, {}, spec, status, NOW, NOW)


def test_an_application_keeps_the_other_replicas_clusters() -> None:
    before = {"clusters": {"lab2": {"state": "Available", "message": "", "workloads": []}}}
    app = _stored("Application", {}, before)
    mine = {"lab1": {"state": "Available", "message": "", "workloads": []}}
    status = _status(mine, [], 2, 1, ["lab1", "lab2", "edge"], None, app)
    assert status["clusters"]["lab2"] == before["clusters"]["lab2"]
    assert status["clusters"]["edge"]["state"] == "Pending"  # nobody has written it yet
    assert status["state"] == "Progressing"
    # A cluster no longer targeted loses its part.
    assert set(_status(mine, [], 2, 1, ["lab1"], None, app)["clusters"]) == {"lab1"}


def test_a_project_keeps_the_other_replicas_placements() -> None:
    theirs = {"environment": "dev", "cluster": "lab2", "namespace": "t--x-dev", "state": "Ready"}
    project = _stored(
        "Project",
        {"quota": {"cpu": "1"}, "environments": [{"name": "dev", "clusters": ["lab1", "lab2"]}]},
        {"placements": [{**theirs, "message": ""}]},
    )
    mine = [{"environment": "dev", "cluster": "lab1", "namespace": "t--x-dev", "state": "Ready"}]
    expected = {("dev", "t--x-dev", c) for c in ("lab1", "lab2", "edge")}
    status = _project_status([{**mine[0], "message": ""}], 2, {"lab1"}, expected, project)
    states = {p["cluster"]: p["state"] for p in status["placements"]}
    assert states == {"lab1": "Ready", "lab2": "Ready", "edge": "Pending"}
    assert status["phase"] == "Degraded"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "Pending"
