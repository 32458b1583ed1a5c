"""A release's Gateway API split must land on the host's route: the canary is a copy of the
first Service the template renders, so the host has to lead there, or the release would wait
for a weight delivery never renders (polling the cluster twice a second, forever)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from wharf.apps.model import ApplicationSpec, check_canary_route
from wharf.core.errors import InvalidError
from wharf.releases.controller import CANARY, Snapshot, release_objects

RENDERED: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"}},
]


def spec(service: str, router: str = "gatewayAPI") -> ApplicationSpec:
    return ApplicationSpec.model_validate(
        {
            "project": "shop",
            "environment": "prod",
            "template": {"name": "web", "version": "1.0.0"},
            "routes": [{"host": "shop.example.com", "service": service, "port": 80}],
            "strategy": {
                "type": "canary",
                "canary": {
                    "steps": [{"setWeight": 20}],
                    "trafficRouting": {router: {"host": "shop.example.com"}},
                },
            },
        }
    )


def test_a_gateway_split_on_a_host_that_leads_to_another_service_is_refused():
    with pytest.raises(InvalidError) as caught:
        check_canary_route(spec("api"), RENDERED)
    assert caught.value.field == "spec.strategy.canary.trafficRouting.gatewayAPI.host"
    assert "web" in caught.value.message


def test_a_gateway_split_on_the_first_services_host_is_taken():
    check_canary_route(spec("web"), RENDERED)
    check_canary_route(spec("api", router="nginx"), RENDERED)  # nginx copies the Ingress


def _stored_spec(nginx_host: str) -> ApplicationSpec:
    """A spec as stored before the apply-time host check existed: any nginx host."""
    body = spec("web", router="nginx").model_dump(by_alias=True, exclude_none=True)
    body["strategy"]["canary"]["trafficRouting"]["nginx"]["host"] = nginx_host
    return ApplicationSpec.model_validate(body)


WORKLOAD: list[dict[str, Any]] = [
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1"}]},
            },
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    },
]


def _canary_ingress_hosts(app_spec: ApplicationSpec) -> list[str]:
    snap = Snapshot(
        app=cast(Any, None),
        spec=app_spec,
        revision=2,
        namespace="acme--shop-prod",
        waves=[],
        limits=[],
        clusters={},
        rendered=WORKLOAD,
        release=None,
        templates={},
    )
    objects = release_objects(("acme", "web"), snap, "lab1", CANARY, None, 20)
    return [rule["host"] for o in objects if o["kind"] == "Ingress" for rule in o["spec"]["rules"]]


def test_the_canary_ingress_serves_only_a_host_the_application_routes():
    """A stored spec naming another tenant's host (before the apply-time check) gets no
    canary Ingress for it: the release controller writes none for a host it does not hold."""
    assert _canary_ingress_hosts(_stored_spec("shop.example.com")) == ["shop.example.com"]
    assert _canary_ingress_hosts(_stored_spec("theirs.example.org")) == []
