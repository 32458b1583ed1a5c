"""Retention planning: which tags go, checked against expectations computed by hand and
against properties that must hold for any set of tags."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from wharf.registry.model import TagState, image_references, plan_retention


def _tags(*specs: tuple[str, str, str]) -> list[TagState]:
    return [TagState("t/p/app", tag, digest, pushed) for tag, digest, pushed in specs]


def _deleted(decisions: list) -> set[str]:  # type: ignore[type-arg]
    return {d.tag.tag for d in decisions if not d.keep}


def test_keeps_the_newest_the_matching_and_the_used() -> None:
    tags = _tags(
        ("release-1", "sha256:r", "2026-01-01T00:00:00"),
        ("v1", "sha256:1", "2026-01-02T00:00:00"),
        ("v2", "sha256:2", "2026-01-03T00:00:00"),
        ("v3", "sha256:3", "2026-01-04T00:00:00"),
        ("v4", "sha256:4", "2026-01-05T00:00:00"),
    )
    plan = plan_retention(tags, 2, [re.compile("release-.*")], {"t/p/app:v1"})
    assert _deleted(plan) == {"v2"}
    reasons = {d.tag.tag: d.reason for d in plan}
    assert reasons["v1"] == "used by a delivered application revision"
    assert reasons["release-1"] == "matches release-.*"


def test_a_tag_sharing_a_kept_digest_stays() -> None:
    tags = _tags(("old", "sha256:a", "1"), ("new", "sha256:a", "2"), ("other", "sha256:b", "0"))
    plan = plan_retention(tags, 1, [], set())
    assert _deleted(plan) == {"other"}


def test_a_used_digest_protects_every_tag_on_it() -> None:
    tags = _tags(("a", "sha256:x", "1"), ("b", "sha256:y", "2"))
    assert _deleted(plan_retention(tags, 0, [], {"sha256:x"})) == {"b"}


def test_image_references_find_tags_and_digests_of_the_registry_only() -> None:
    spec = {
        "values": {"image": "reg:5000/t/p/app:v1", "side": ["reg:5000/t/p/x@sha256:ab"]},
        "other": "elsewhere:5000/t/p/app:v2",
    }
    assert image_references(spec, "reg:5000") == {"t/p/app:v1", "sha256:ab"}


tag_states = st.lists(
    st.builds(
        TagState,
        st.sampled_from(["t/p/a", "t/p/b"]),
        st.text("abc123", min_size=1, max_size=4),
        st.sampled_from(["sha256:1", "sha256:2", "sha256:3", "sha256:4"]),
        st.sampled_from(["", "1", "2", "3"]),
    ),
    max_size=12,
    unique_by=lambda t: (t.repository, t.tag),
)


@given(tag_states, st.integers(0, 5), st.sets(st.sampled_from(["sha256:1", "t/p/a:a"])))
def test_what_is_deleted_never_takes_a_kept_or_used_tag_with_it(
    tags: list[TagState], keep_last: int, in_use: set[str]
) -> None:
    plan = plan_retention(tags, keep_last, [], in_use)
    assert len(plan) == len(tags)
    kept = {(d.tag.repository, d.tag.digest) for d in plan if d.keep}
    for d in plan:
        if not d.keep:
            assert (d.tag.repository, d.tag.digest) not in kept
            assert d.tag.digest not in in_use
            assert f"{d.tag.repository}:{d.tag.tag}" not in in_use
    for repository in {t.repository for t in tags}:
        count = sum(1 for t in tags if t.repository == repository)
        left = sum(1 for d in plan if d.keep and d.tag.repository == repository)
        assert left >= min(keep_last, count)
