"""The web analysis provider's pure parts: the JSON path, and the
arguments filled into the URL encoded (an argument cannot change the URL's shape)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from wharf.releases.model import Metric, extract, web_url

WEB = {"url": "https://m.example/rate/${cluster}", "jsonPath": "$.data.rate"}


def metric(**fields: object) -> Metric:
    return Metric.model_validate({"name": "m", "successCondition": "result < 1", **fields})


def test_a_web_check_path_is_names_and_indexes():
    with pytest.raises(ValidationError):
        metric(web={**WEB, "jsonPath": "data rate"})


@pytest.mark.parametrize(
    ("document", "path", "value"),
    [
        ({"data": {"rate": 0.5}}, "$.data.rate", 0.5),
        ({"data": {"rate": "0.25"}}, "$.data.rate", 0.25),
        ({"r": [{"v": 3}]}, "$.r[0].v", 3.0),
        ({"r": []}, "$.r[0].v", None),
        ({"data": {"rate": True}}, "$.data.rate", None),
        ({"data": {"rate": "high"}}, "$.data.rate", None),
        ({"data": None}, "$.data.rate", None),
    ],
)
def test_the_number_at_a_path(document: object, path: str, value: float | None):
    assert extract(document, path) == value


def test_arguments_are_encoded_into_the_url():
    url = web_url(metric(web=WEB), {"cluster": "x/../../admin?y=1#"})
    assert url == "https://m.example/rate/x%2F..%2F..%2Fadmin%3Fy%3D1%23"
