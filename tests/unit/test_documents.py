"""YAML is read with bounds: aliases cannot multiply a document, nor nesting run deep."""

import pytest
import yaml

from wharf.core import documents


def test_ordinary_documents_and_modest_aliases_load():
    text = "a: &x {cpu: '1'}\nb: *x\nc: [1, 2, {d: e}]\n---\n---\nf: g\n"
    assert documents.load_all(text) == [
        {"a": {"cpu": "1"}, "b": {"cpu": "1"}, "c": [1, 2, {"d": "e"}]},
        {"f": "g"},
    ]


def test_an_alias_bomb_is_refused_before_it_is_built():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 12)]
    with pytest.raises(documents.DocumentTooLarge, match="expands to more than"):
        documents.load("\n".join(lines))


@pytest.mark.parametrize("text", ["a: &a [*a]", "a: &a {b: *a}", "&a [1, [2, *a]]"])
def test_an_alias_inside_its_own_anchor_is_refused(text):
    with pytest.raises(documents.DocumentTooLarge, match="contains it"):
        documents.load(text)


def test_deep_nesting_is_refused_as_bad_yaml():
    with pytest.raises(yaml.YAMLError, match="nests deeper"):
        documents.load("[" * 10_000 + "]" * 10_000)


def test_one_long_string_used_many_times_is_refused():
    # Few nodes, under the body bound, but gigabytes once the aliases are written out.
    lines = ["big: &a " + "x" * 500_000, "values:"]
    lines += [f"  k{i}: *a" for i in range(20_000)]
    text = "\n".join(lines)
    assert len(text) < 1024 * 1024
    with pytest.raises(documents.DocumentTooLarge, match="bytes of text"):
        documents.load(text)
