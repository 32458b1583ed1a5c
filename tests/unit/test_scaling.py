"""Scheduled windows and the autoscaler an application renders, without a cluster."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from wharf.apps.catalog import WEB_SERVICE, WORKER
from wharf.apps.model import (
    ApplicationSpec,
    Autoscaling,
    ClusterOverride,
    ReplicaBounds,
    ScalingWindow,
    TemplateVersion,
    check_autoscaling,
    desired_objects,
    keep_autoscaled_replicas,
    render,
)
from wharf.core.errors import InvalidError
from wharf.scaling.model import applied_window, next_change, open_window, schedule_status, stamped
from wharf.scaling.service import scaled_spec

BUSINESS = ScalingWindow(
    name="business-hours",
    start="0 9 * * 1-5",
    end="0 18 * * 1-5",
    timeZone="Europe/Berlin",
    minReplicas=4,
)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def test_a_window_is_open_from_its_start_to_its_end_in_its_time_zone():
    # Monday 2 March 2026: Berlin is UTC+1, so 09:00 there is 08:00 UTC.
    assert open_window([BUSINESS], utc(2026, 3, 2, 7, 59)) is None
    assert open_window([BUSINESS], utc(2026, 3, 2, 8, 0)) == BUSINESS
    assert open_window([BUSINESS], utc(2026, 3, 2, 16, 59)) == BUSINESS
    assert open_window([BUSINESS], utc(2026, 3, 2, 17, 0)) is None
    # Saturday: closed all day.
    assert open_window([BUSINESS], utc(2026, 3, 7, 12, 0)) is None


def test_the_window_follows_daylight_saving_time():
    # Monday 30 March 2026: Berlin is UTC+2, so 09:00 there is 07:00 UTC.
    assert open_window([BUSINESS], utc(2026, 3, 30, 7, 0)) == BUSINESS
    assert open_window([BUSINESS], utc(2026, 3, 30, 6, 59)) is None


def test_next_change_is_the_next_opening_or_closing():
    assert next_change([BUSINESS], utc(2026, 3, 2, 10, 0)) == utc(2026, 3, 2, 17, 0)
    assert next_change([BUSINESS], utc(2026, 3, 6, 18, 0)) == utc(2026, 3, 9, 8, 0)


def test_the_status_names_the_window_and_keeps_since_while_it_stays_open():
    first = stamped(schedule_status([BUSINESS], utc(2026, 3, 2, 8, 0)), None, utc(2026, 3, 2, 8))
    assert first == {
        "window": "business-hours",
        "minReplicas": 4,
        "maxReplicas": None,
        "nextChange": "2026-03-02T17:00:00Z",
        "since": "2026-03-02T08:00:00Z",
    }
    later = stamped(schedule_status([BUSINESS], utc(2026, 3, 2, 9)), first, utc(2026, 3, 2, 9))
    assert later == first
    assert applied_window({"schedule": first}) == ReplicaBounds(minReplicas=4)
    closed = stamped(schedule_status([BUSINESS], utc(2026, 3, 2, 17)), first, utc(2026, 3, 2, 17))
    assert closed["window"] is None
    assert applied_window({"schedule": closed}) is None


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("start", "61 * * * *", "not a cron expression"),
        ("end", "every day", "not a cron expression"),
        ("timeZone", "Mars/Olympus", "not an IANA time zone"),
    ],
)
def test_a_bad_cron_or_time_zone_is_refused_naming_the_field(field: str, value: str, says: str):
    window = {**BUSINESS.model_dump(), field: value}
    with pytest.raises(ValidationError) as caught:
        ScalingWindow.model_validate(window)
    error = caught.value.errors()[0]
    assert error["loc"] == (field,)
    assert says in error["msg"]


def test_a_cron_that_never_fires_is_refused_naming_the_field():
    never = BUSINESS.model_copy(update={"end": "0 0 30 2 *"})  # 30 February
    auto = Autoscaling(maxReplicas=5, cpu=50, schedules=[never])
    with pytest.raises(InvalidError) as caught:
        check_autoscaling(auto, {})
    assert caught.value.field == "spec.autoscaling.schedules[0].end"
    assert "never fires" in caught.value.message


def test_bounds_that_cannot_hold_are_refused():
    with pytest.raises(InvalidError) as caught:
        check_autoscaling(Autoscaling(minReplicas=6, maxReplicas=5, cpu=50), {})
    assert caught.value.field == "spec.autoscaling.minReplicas"
    with pytest.raises(InvalidError) as caught:
        check_autoscaling(None, {"lab1": ClusterOverride(minReplicas=4, maxReplicas=3)})
    assert caught.value.field == "spec.overrides.lab1.minReplicas"
    with pytest.raises(InvalidError) as caught:
        check_autoscaling(Autoscaling(maxReplicas=5), {})
    assert caught.value.field == "spec.autoscaling.cpu"


def _objects(template: dict[str, Any], spec: ApplicationSpec, cluster: str = "lab1", **kw: Any):
    tv = TemplateVersion.model_validate(template["versions"][0])
    return desired_objects("web", spec, render(tv, spec.values), cluster, {}, **kw)


def _spec(template: str, **extra: Any) -> ApplicationSpec:
    return ApplicationSpec.model_validate(
        {
            "project": "p",
            "environment": "dev",
            "template": {"name": template, "version": "1.0.0"},
            "values": {"name": "web", "image": "registry.example/web:1.0"},
            **extra,
        }
    )


def _hpa(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (hpa,) = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    return hpa["spec"]


AUTO = {
    "minReplicas": 2,
    "maxReplicas": 6,
    "cpu": 50,
    "memory": 70,
    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}},
}


def test_the_applications_autoscaling_replaces_the_templates_targets_and_bounds():
    hpa = _hpa(_objects(WEB_SERVICE, _spec("web-service", autoscaling=AUTO)))
    assert hpa["minReplicas"] == 2
    assert hpa["maxReplicas"] == 6
    targets = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["metrics"]}
    assert targets == {
        "cpu": {"type": "Utilization", "averageUtilization": 50},
        "memory": {"type": "Utilization", "averageUtilization": 70},
    }
    assert hpa["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 5}}
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}


def test_a_template_without_an_autoscaler_gets_one_for_its_workload():
    objects = _objects(WORKER, _spec("worker", autoscaling=AUTO))
    hpa = next(o for o in objects if o["kind"] == "HorizontalPodAutoscaler")
    assert hpa["metadata"]["name"] == "web"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "web"
    assert not [o for o in _objects(WORKER, _spec("worker")) if "Autoscaler" in o["kind"]]


def test_cluster_overrides_and_an_open_window_set_the_bounds():
    overrides = {"lab2": {"minReplicas": 3, "maxReplicas": 4}}
    spec = _spec("web-service", autoscaling=AUTO, overrides=overrides)
    assert (_hpa(_objects(WEB_SERVICE, spec))["minReplicas"], 6) == (2, 6)
    lab2 = _hpa(_objects(WEB_SERVICE, spec, "lab2"))
    assert (lab2["minReplicas"], lab2["maxReplicas"]) == (3, 4)
    # The open window applies over the cluster's own bounds; max is never below min.
    opened = _hpa(_objects(WEB_SERVICE, spec, "lab2", window=ReplicaBounds(minReplicas=5)))
    assert (opened["minReplicas"], opened["maxReplicas"]) == (5, 5)


def test_delivery_keeps_the_replicas_the_autoscaler_set():
    objects = _objects(WEB_SERVICE, _spec("web-service", autoscaling=AUTO))
    currents: list[dict[str, Any] | None] = [
        {"spec": {"replicas": 5}} if o["kind"] == "Deployment" else None for o in objects
    ]
    keep_autoscaled_replicas(objects, currents)
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 5


def test_scaling_by_hand_sets_one_cluster_or_every_cluster():
    spec = {"replicas": 1, "overrides": {"lab1": {"replicas": 3, "env": {"A": "1"}}}}
    assert scaled_spec(spec, 4, "lab2")["overrides"]["lab2"] == {"replicas": 4}
    everywhere = scaled_spec(spec, 4, None)
    assert everywhere["replicas"] == 4
    assert everywhere["overrides"] == {"lab1": {"env": {"A": "1"}}}
    objects = _objects(WORKER, _spec("worker", replicas=4))
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 4


def test_wharf_scale_takes_replicas_and_an_optional_cluster():
    from typer.testing import CliRunner

    from wharf.cli import app

    result = CliRunner().invoke(app, ["scale", "--help"])
    assert result.exit_code == 0
    assert "--replicas" in result.output
    assert "--cluster" in result.output
    refused = CliRunner().invoke(app, ["scale", "web", "-t", "demo", "--replicas", "-1"])
    assert refused.exit_code == 2  # typer's own range check, before any request
