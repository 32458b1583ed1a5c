"""The lab waits for each CRD to be Established, also through the moment the API server
answers a fresh CRD with `status.conditions: null` (a TypeError once stopped a lab start)."""

from __future__ import annotations

from wharf.lab.crds import _established


def test_a_fresh_crd_without_conditions_is_not_established_yet() -> None:
    assert not _established({"status": {"conditions": None}})
    assert not _established({"status": None})
    assert not _established({})


def test_an_established_crd_is_seen_as_such() -> None:
    crd = {"status": {"conditions": [{"type": "Established", "status": "True"}]}}
    assert _established(crd)
    assert not _established(
        {"status": {"conditions": [{"type": "Established", "status": "False"}]}}
    )
