"""Release analysis as Wharf builds and judges it: queries confined to the application's
namespace, measurements judged by their conditions, limits, and waves of clusters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wharf.apps.model import Wave
from wharf.core.errors import InvalidError
from wharf.releases.model import (
    Metric,
    build_query,
    canary_replicas,
    confine,
    judge,
    resolve_waves,
    verdict,
)


def metric(**extra: object) -> Metric:
    values = {"name": "m", "query": "x", "successCondition": "result < 0.05", **extra}
    return Metric.model_validate(values)


def test_every_selector_gets_the_namespace_even_inside_functions_and_subqueries():
    query = confine(
        'sum(rate(a{code="500"}[1m])) / sum(rate(a[1m])) + max_over_time(b[5m:1m]) '
        '+ count({__name__=~".+"})',
        "t--p-dev",
        "q",
    )
    assert query.count('namespace="t--p-dev"') == 4


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ('a{namespace="other"}', "names a namespace"),
        ('a{namespace=~".*"}', "names a namespace"),
        ('a{b="1" or c="2"}', "`or` label matchers"),
        ("sum(", "not valid PromQL"),
    ],
)
def test_a_query_may_not_choose_its_namespace(query: str, why: str):
    with pytest.raises(InvalidError, match=why) as caught:
        confine(query, "t--p-dev", "spec.metrics[0].query")
    assert caught.value.field == "spec.metrics[0].query"


def test_an_argument_that_breaks_out_of_its_string_is_confined_too():
    sneaky = '500"} or other{app="x'
    query = build_query(metric(query='a{code="${code}"}'), {"code": sneaky}, "mine")
    assert 'other{namespace="mine"' in query


def test_an_argument_without_a_value_is_refused():
    with pytest.raises(InvalidError, match=r"no value for \$\{code\}"):
        build_query(metric(query='a{code="${code}"}'), {}, "mine")


def test_measurements_are_judged_by_their_conditions():
    m = metric(failureCondition="result > 0.2")
    assert judge(m, 0.01) == "Successful"
    assert judge(m, 0.5) == "Failed"
    assert judge(m, 0.1) == "Inconclusive"
    assert judge(m, None) == "Error"
    assert judge(m, float("nan")) == "Error"
    assert judge(metric(), 0.1) == "Failed"  # no failure condition: not a success fails


def test_limits_decide_what_the_measurements_add_up_to():
    m = metric(count=2, failureLimit=1, inconclusiveLimit=0, consecutiveErrorLimit=1)
    assert verdict(m, ["Successful"]) == "Running"
    assert verdict(m, ["Successful", "Successful"]) == "Successful"
    assert verdict(m, ["Failed"]) == "Running"
    assert verdict(m, ["Failed", "Failed"]) == "Failed"
    assert verdict(m, ["Inconclusive"]) == "Inconclusive"
    assert verdict(m, ["Error", "Successful", "Error"]) == "Running"
    assert verdict(m, ["Error", "Error"]) == "Failed"  # Prometheus down is never a pass


def test_a_condition_must_compare_the_result_with_a_number():
    with pytest.raises(ValueError, match="comparison"):
        metric(successCondition="__import__('os')")


def test_waves_take_named_clusters_then_selected_ones_and_leave_none_out():
    labels = {"a": {"region": "east"}, "b": {"region": "west"}, "c": {"region": "east"}}
    waves = [Wave(clusters=["b"]), Wave(selector={"region": "east"})]
    assert resolve_waves(waves, ["a", "b", "c"], labels) == [["b"], ["a", "c"]]
    assert resolve_waves([Wave(clusters=["a"])], ["a", "b", "c"], labels) == [["a"], ["b", "c"]]
    assert resolve_waves([], ["b", "a"], labels) == [["a", "b"]]


@given(st.integers(0, 100), st.integers(1, 500))
def test_canary_replicas_follow_the_weight(weight: int, replicas: int):
    n = canary_replicas(weight, replicas)
    assert (n == 0) == (weight == 0)
    assert n <= replicas
    assert n * 100 >= weight * replicas
