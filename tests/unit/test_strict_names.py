"""Names, label values and header values are checked to their last character: Python's `$`
also matches before a trailing newline, and Kubernetes reads a label selector leniently
("web " and "web\\n" select "web"), so a name with a line break could reach another object."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from wharf.apps.model import HeaderRoute
from wharf.core.errors import InvalidError
from wharf.core.resources import Metadata, check_name
from wharf.kube.apply import exact
from wharf.store.changes import USER, Change


@pytest.mark.parametrize("name", ["web\n", "web ", "web,x", "we b", "web\x00"])
def test_a_name_with_anything_after_it_is_refused(name: str) -> None:
    with pytest.raises(InvalidError):
        check_name(name)
    assert check_name("web") == "web"


def test_a_label_value_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValidationError):
        Metadata(name="web", labels={"team": "blue\n"})
    assert Metadata(name="web", labels={"team": "blue"}).labels == {"team": "blue"}


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-Canary\n", "always"), ("X-Canary", "a\nb"), ("X-Canary", " always"), ("X-Canary", "")],
)
def test_a_header_route_with_a_line_break_or_control_character_is_refused(
    name: str, value: str
) -> None:
    with pytest.raises(ValidationError):
        HeaderRoute(name=name, value=value)
    assert HeaderRoute(name="X-Canary", value="on; v=2").value == "on; v=2"


@pytest.mark.parametrize("value", ["web\n", "web ", "web,app.kubernetes.io/managed-by", "a\x00"])
def test_a_removal_by_a_value_that_is_no_label_value_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="not a label value"):
        exact({"wharf.io/project": value})
    exact({"wharf.io/project": "web", "wharf.io/tenant": ""})


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        json.dumps({"kind": "Project"}),
        json.dumps([1, 2, 3, 4]),
        json.dumps(["r", "Project", "shop", "web "]),
        json.dumps(["r", "Project", "shop", "web\n"]),
        json.dumps(["r", "Project", "shop", "web,x"]),
        json.dumps(["r", "Project", "sh op", "web"]),
        json.dumps(["r", "project;drop", "shop", "web"]),
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_a_notification_wharf_did_not_send_is_ignored(payload: str) -> None:
    assert Change.parse(payload) is None


def test_a_notification_wharf_sends_is_read_back() -> None:
    change = Change("r1", "Project", "shop", "web")
    assert Change.parse(change.payload()) == change
    user = Change("r1", USER, "", "alice@example.com")
    assert Change.parse(user.payload()) == user
