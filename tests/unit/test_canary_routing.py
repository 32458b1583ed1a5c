"""A release's Gateway API split must land on the host's route: the canary is a copy of the
first Service the template renders, so the host has to lead there, or the release would wait
for a weight delivery never renders (polling the cluster twice a second, forever)."""

from __future__ import annotations

from typing import Any

import pytest

from wharf.apps.model import ApplicationSpec, check_canary_route
from wharf.core.errors import InvalidError

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
