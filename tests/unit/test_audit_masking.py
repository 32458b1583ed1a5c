"""The audit trail's pure parts: secrets masked by a fingerprint, and the diff of a change."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from wharf.core.audit import MASK, diff, mask, unmasked

FINGERPRINT = re.compile(r"^\*\*\*[0-9a-f]{8}$")

SPEC: dict[str, Any] = {
    "server": "https://10.0.0.1:6443",
    "token": "s3cr3t-token",
    "auth": {"clientKey": "-----BEGIN KEY-----abc", "user": "admin"},
    "replicas": 3,
    "tags": ["a", "b"],
}


def test_mask_replaces_top_level_and_dotted_secret_fields_by_a_fingerprint() -> None:
    masked = mask(SPEC, ("token", "auth.clientKey"))
    assert masked is not None
    assert FINGERPRINT.match(masked["token"])
    assert FINGERPRINT.match(masked["auth"]["clientKey"])
    assert masked["token"].startswith(MASK)
    assert "s3cr3t" not in repr(masked)
    assert "BEGIN KEY" not in repr(masked)


def test_mask_leaves_other_fields_alone() -> None:
    masked = mask(SPEC, ("token", "auth.clientKey"))
    assert masked is not None
    assert masked["server"] == SPEC["server"]
    assert masked["auth"]["user"] == "admin"
    assert masked["replicas"] == 3
    assert masked["tags"] == ["a", "b"]
    assert set(masked) == set(SPEC)
    assert set(masked["auth"]) == set(SPEC["auth"])


def test_mask_does_not_touch_its_input() -> None:
    before = copy.deepcopy(SPEC)
    masked = mask(SPEC, ("token", "auth.clientKey"))
    assert before == SPEC
    assert masked is not SPEC
    assert masked is not None
    assert masked["auth"] is not SPEC["auth"]


def test_same_value_gives_the_same_fingerprint() -> None:
    first = mask({"token": "abc"}, ("token",))
    again = mask({"token": "abc", "other": 1}, ("token",))
    nested = mask({"auth": {"password": "abc"}}, ("auth.password",))
    assert first is not None
    assert again is not None
    assert nested is not None
    assert first["token"] == again["token"] == nested["auth"]["password"]


def test_different_values_give_different_fingerprints() -> None:
    values = ["abc", "abd", "ABC", "abc ", "", "x" * 1000, "1"]
    fingerprints = {
        masked["token"]
        for v in values
        if v
        for masked in [mask({"token": v}, ("token",))]
        if masked is not None
    }
    assert len(fingerprints) == len([v for v in values if v])


@given(st.text(min_size=1), st.text(min_size=1))
def test_fingerprints_differ_exactly_when_values_differ(a: str, b: str) -> None:
    ma, mb = mask({"k": a}, ("k",)), mask({"k": b}, ("k",))
    assert ma is not None
    assert mb is not None
    assert FINGERPRINT.match(ma["k"])
    assert (ma["k"] == mb["k"]) == (a == b)


def test_non_string_secret_values_are_masked_too() -> None:
    masked = mask({"creds": {"user": "u", "pass": "p"}, "pin": 1234}, ("creds", "pin"))
    assert masked is not None
    assert FINGERPRINT.match(masked["pin"])
    # A map of secrets keeps its shape (the answer fits the kind's schema); its values do not.
    assert set(masked["creds"]) == {"user", "pass"}
    assert all(FINGERPRINT.match(v) for v in masked["creds"].values())
    assert "u" not in masked["creds"].values()
    assert "p" not in masked["creds"].values()


def test_a_masked_map_sent_back_keeps_what_was_left_masked_and_takes_what_changed() -> None:
    old = {"db": {"USER": "app", "PASSWORD": "old"}, "api": {"KEY": "k"}}
    shown = mask({"s": old}, ("s",))
    assert shown is not None
    sent = json.loads(json.dumps(shown["s"]))
    sent["db"]["PASSWORD"] = "new"
    sent["extra"] = {"X": "x"}
    assert unmasked(sent, shown["s"], old) == {
        "db": {"USER": "app", "PASSWORD": "new"},
        "api": {"KEY": "k"},
        "extra": {"X": "x"},
    }
    assert unmasked(shown["s"], shown["s"], old) == old
    # A fingerprint moved under a name it was not shown for is a literal, not the secret.
    moved = {"api": {"KEY": shown["s"]["db"]["PASSWORD"]}}
    assert unmasked(moved, shown["s"], old) == moved


def test_missing_empty_or_unreachable_secret_fields_are_left_as_they_are() -> None:
    spec: dict[str, Any] = {"token": "", "password": None, "list": [{"key": "v"}], "n": 1}
    masked = mask(spec, ("token", "password", "absent", "deep.absent", "list.key", "n.key"))
    assert masked == spec


def test_mask_of_none_is_none() -> None:
    assert mask(None, ("token",)) is None


def test_a_changed_secret_shows_in_the_diff_without_its_values() -> None:
    old = mask({"token": "old-secret", "server": "a"}, ("token",))
    new = mask({"token": "new-secret", "server": "a"}, ("token",))
    changes = diff(old, new)
    assert [c["path"] for c in changes] == ["token"]
    assert FINGERPRINT.match(changes[0]["old"])
    assert FINGERPRINT.match(changes[0]["new"])
    assert "secret" not in repr(changes)
    assert diff(mask({"token": "same"}, ("token",)), mask({"token": "same"}, ("token",))) == []


# --- diff -----------------------------------------------------------------------------------


def test_diff_of_equal_specs_is_empty() -> None:
    assert diff(SPEC, copy.deepcopy(SPEC)) == []


def test_diff_lists_changed_leaves_with_dotted_paths() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3, "e": {"f": "x"}}, "g": "same"}
    new = {"a": 1, "b": {"c": 5, "d": 3, "e": {"f": "y"}}, "g": "same"}
    assert diff(old, new) == [
        {"path": "b.c", "old": 2, "new": 5},
        {"path": "b.e.f", "old": "x", "new": "y"},
    ]


def test_diff_reports_added_and_removed_keys_against_none() -> None:
    old = {"keep": 1, "gone": "x", "nested": {"old": True}}
    new = {"keep": 1, "added": [1], "nested": {"new": False}}
    assert diff(old, new) == [
        {"path": "added", "old": None, "new": [1]},
        {"path": "gone", "old": "x", "new": None},
        {"path": "nested.new", "old": None, "new": False},
        {"path": "nested.old", "old": True, "new": None},
    ]


def test_diff_compares_lists_whole() -> None:
    old = {"clusters": ["c1", "c2"], "envs": [{"name": "dev", "cpu": "1"}]}
    new = {"clusters": ["c1", "c3"], "envs": [{"name": "dev", "cpu": "2"}]}
    assert diff(old, new) == [
        {"path": "clusters", "old": ["c1", "c2"], "new": ["c1", "c3"]},
        {"path": "envs", "old": old["envs"], "new": new["envs"]},
    ]


def test_diff_treats_a_dict_replaced_by_a_scalar_as_one_leaf() -> None:
    assert diff({"a": {"b": 1}}, {"a": 2}) == [{"path": "a", "old": {"b": 1}, "new": 2}]
    assert diff({"a": 2}, {"a": {"b": 1}}) == [{"path": "a", "old": 2, "new": {"b": 1}}]


def test_diff_is_ordered_by_key() -> None:
    old = {"z": 1, "a": 1, "m": {"y": 1, "b": 1}}
    new = {"z": 2, "a": 2, "m": {"y": 2, "b": 2}}
    assert [c["path"] for c in diff(old, new)] == ["a", "m.b", "m.y", "z"]


def test_diff_from_nothing_is_one_change_at_the_root() -> None:
    assert diff(None, {"a": 1}) == [{"path": "", "old": None, "new": {"a": 1}}]
    assert diff({"a": 1}, None) == [{"path": "", "old": {"a": 1}, "new": None}]


# No None leaves: diff() reads a missing key as None, so {} and {"a": None} count as equal.
leaves = st.one_of(st.booleans(), st.integers(), st.text(max_size=5), st.lists(st.integers()))
specs = st.recursive(
    st.dictionaries(st.text("abc", min_size=1, max_size=2), leaves, max_size=4),
    lambda children: st.dictionaries(
        st.text("abc", min_size=1, max_size=2), st.one_of(leaves, children), max_size=4
    ),
    max_leaves=12,
)


def _get(spec: Any, path: str) -> Any:
    for part in path.split("."):
        spec = spec.get(part) if isinstance(spec, dict) else None
    return spec


@given(specs, specs)
def test_diff_paths_point_at_the_old_and_new_values(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    changes = diff(old, new)
    assert (changes == []) == (old == new)
    paths = [c["path"] for c in changes]
    assert len(paths) == len(set(paths))
    for change in changes:
        assert change["old"] != change["new"]
        assert _get(old, change["path"]) == change["old"]
        assert _get(new, change["path"]) == change["new"]
