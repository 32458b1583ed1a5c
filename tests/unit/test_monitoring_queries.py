"""Wharf writes the PromQL of charts itself: names are names, ranges are bounded, and every
query carries the tenant and project matchers of its scope."""

from __future__ import annotations

import datetime as dt
import socket

import pytest

from wharf.core.errors import InvalidError
from wharf.monitoring.model import (
    CHARTS,
    MAX_POINTS,
    Scope,
    chart_queries,
    check_name,
    quota_query,
    time_range,
    top_queries,
)
from wharf.monitoring.service import MetricsUnavailableError, PrometheusReader

NOW = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "hostile",
    ['x"} or {tenant="other"', 'web",tenant=~".+', "web|.*", "__name__", "a" * 64, "Web", ""],
)
def test_only_kubernetes_names_become_matchers(hostile: str) -> None:
    with pytest.raises(InvalidError) as refused:
        check_name(hostile, "app")
    assert refused.value.field == "app"


@pytest.mark.parametrize("chart", CHARTS)
def test_every_query_is_scoped_to_its_tenant_and_project(chart) -> None:
    scope = Scope("acme", "shop", "web")
    for promql in [*chart_queries(chart, scope).values(), *top_queries(scope).values()]:
        assert '{tenant="acme",project="shop",app="web"}' in promql
        assert promql.count("{") == 1  # one selector: nothing else is read
    quota = quota_query(chart, scope)
    assert quota is None or 'wharf_project_quota{tenant="acme",project="shop",' in quota


def test_a_project_chart_has_a_line_per_app_and_an_apps_per_cluster() -> None:
    assert "by (app)" in chart_queries("cpu", Scope("acme", "shop"))["used"]
    assert "by (cluster)" in chart_queries("cpu", Scope("acme", "shop", "web"))["used"]


def test_the_quota_regex_is_a_valid_promql_string() -> None:
    assert quota_query("cpu", Scope("a", "b")) == (
        'last_over_time(wharf_project_quota{tenant="a",project="b",'
        'resource=~"cpu|requests\\\\.cpu|limits\\\\.cpu"}[10m])'
    )


def test_ranges_are_bounded() -> None:
    default = time_range(None, None, None, NOW)
    assert (default.end - default.start, default.step) == (dt.timedelta(hours=1), 30)
    with pytest.raises(InvalidError) as wide:
        time_range(NOW - dt.timedelta(days=8), NOW, None, NOW)
    assert wide.value.field == "start"
    with pytest.raises(InvalidError) as small:
        time_range(NOW - dt.timedelta(hours=1), NOW, 1, NOW)
    assert small.value.field == "step"
    assert "4s" in small.value.message  # the smallest step that fits
    assert time_range(NOW - dt.timedelta(hours=1), NOW, 4, NOW).points <= MAX_POINTS
    with pytest.raises(InvalidError) as backwards:
        time_range(NOW, NOW - dt.timedelta(hours=1), None, NOW)
    assert backwards.value.field == "end"


def test_a_prometheus_that_does_not_answer_is_a_503_not_a_crash() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(MetricsUnavailableError) as down:
        PrometheusReader(f"http://127.0.0.1:{port}").instant("up")
    assert down.value.status == 503
    with pytest.raises(MetricsUnavailableError):
        PrometheusReader(None).instant("up")
