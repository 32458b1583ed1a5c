"""The parameter form built from a template's schema, the values it posts back, quota bars."""

from __future__ import annotations

import pytest

from wharf.apps.catalog import CATALOG
from wharf.console.forms import fields_of, values_from
from wharf.console.web import usage
from wharf.core.errors import InvalidError

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z]+$", "description": "workload name"},
        "replicas": {"type": "integer", "default": 1},
        "ratio": {"type": "number"},
        "public": {"type": "boolean", "default": True},
        "tier": {"type": "string", "enum": ["small", "large"], "default": "small"},
        "ports": {"type": "array"},
    },
    "required": ["name"],
}


def test_each_parameter_gets_an_input_of_its_type_filled_with_its_default():
    fields = {f.name: f for f in fields_of(SCHEMA, {"name": "web"})}
    assert [f.name for f in fields_of(SCHEMA, {})] == list(SCHEMA["properties"])
    assert (fields["name"].input, fields["name"].value, fields["name"].required) == (
        "text",
        "web",
        True,
    )
    assert fields["name"].pattern == "^[a-z]+$"
    assert fields["name"].description == "workload name"
    assert (fields["replicas"].input, fields["replicas"].value, fields["replicas"].step) == (
        "number",
        "1",
        "1",
    )
    assert fields["ratio"].step == "any"
    assert fields["public"].input == "checkbox"
    assert fields["public"].checked
    assert fields["tier"].input == "select"
    assert fields["tier"].options == ["small", "large"]
    assert fields["ports"].input == "json"
    assert fields["replicas"].form_name == "v.replicas"


def test_posted_values_come_back_typed_and_empty_optional_ones_keep_their_default():
    posted = {"v.name": "web", "v.replicas": "3", "v.ratio": "0.5", "v.tier": "large"}
    posted["v.ports"] = "[80, 443]"
    assert values_from(SCHEMA, posted) == {
        "name": "web",
        "replicas": 3,
        "ratio": 0.5,
        "public": False,  # an unticked checkbox is posted as nothing
        "tier": "large",
        "ports": [80, 443],
    }
    assert values_from(SCHEMA, {"v.name": "web", "v.public": "true"}) == {
        "name": "web",
        "public": True,
    }


@pytest.mark.parametrize(
    ("posted", "message"),
    [
        ({}, "values.name: required"),
        ({"v.name": "web", "v.replicas": "two"}, "values.replicas: 'two' is not a whole number"),
        ({"v.name": "web", "v.ratio": "x"}, "values.ratio: 'x' is not a number"),
        ({"v.name": "web", "v.tier": "huge"}, "values.tier: choose one of small, large"),
        ({"v.name": "web", "v.ports": "{"}, "values.ports: not JSON"),
        ({"v.name": "web", "v.ports": "{}"}, "values.ports: must be a JSON array"),
    ],
)
def test_wrong_values_say_which_parameter_and_why(posted, message):
    with pytest.raises(InvalidError) as caught:
        values_from(SCHEMA, posted)
    assert caught.value.message.startswith(message)
    assert caught.value.field == message.split(":")[0]


def test_every_catalog_template_makes_a_form_that_round_trips_its_defaults():
    for name, template in CATALOG.items():
        schema = template["versions"][0]["parameters"]
        fields = fields_of(schema, {"name": "web", "image": "r.example/web:1.0"})
        posted = {f.form_name: f.value for f in fields if f.input != "checkbox" or f.checked}
        values = values_from(schema, posted)
        assert values["name"] == "web"
        assert values["image"] == "r.example/web:1.0"
        for parameter, prop in schema["properties"].items():
            if "default" in prop:
                assert values[parameter] == prop["default"], (name, parameter)


@pytest.mark.parametrize(
    ("used", "limit", "percent", "level"),
    [
        ("0", "4", 0.0, "ok"),
        ("2.7", "4", 67.5, "ok"),
        ("2800m", "4", 70.0, "warn"),
        ("3.6", "4", 90.0, "warn"),
        ("3601m", "4", 90.0, "high"),  # 90.025 %: above 90 is red even when it rounds to 90
        ("8Gi", "4Gi", 200.0, "high"),
        (None, "10", 0.0, "ok"),
        ("1", None, 100.0, "high"),
    ],
)
def test_quota_bars_are_green_below_70_yellow_to_90_red_above(used, limit, percent, level):
    bar = usage(used, limit)
    assert (bar["percent"], bar["level"]) == (percent, level)
    assert 0 <= bar["width"] <= 100


def test_an_unreadable_quantity_gives_a_grey_bar_not_an_error():
    assert usage("lots", "4")["level"] == "unknown"
