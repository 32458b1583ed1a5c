"""The lab's CRD bundles: Gateway API (standard channel) and cert-manager's CRDs, fetched from
their Go modules through the module proxy and installed by `wharf lab up` into every cluster,
so the API servers validate HTTPRoutes and Certificates against the projects' own schemas.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from wharf.lab import Lab, LabCluster, crds


@pytest.fixture(params=["lab1", "lab2"])
def cluster(lab: Lab, request: pytest.FixtureRequest) -> LabCluster:
    return lab.cluster(request.param)


def _apply(kubectl, cluster: LabCluster, obj: dict, check: bool = False):
    return kubectl(
        cluster, "apply", "--dry-run=server", "-f", "-", stdin=json.dumps(obj), check=check
    )


def test_every_cluster_serves_the_bundles_kinds(cluster, kubectl):
    found = kubectl(cluster, "api-resources", "-o", "name").stdout.split()
    for kind in (
        "httproutes.gateway.networking.k8s.io",
        "gateways.gateway.networking.k8s.io",
        "referencegrants.gateway.networking.k8s.io",
        "certificates.cert-manager.io",
        "clusterissuers.cert-manager.io",
    ):
        assert kind in found, f"{cluster.name} does not serve {kind}"
    crd = json.loads(
        kubectl(cluster, "get", "crd", "httproutes.gateway.networking.k8s.io", "-o", "json").stdout
    )
    annotations = crd["metadata"]["annotations"]
    assert annotations["gateway.networking.k8s.io/bundle-version"] == crds.GATEWAY_API.version
    assert annotations["gateway.networking.k8s.io/channel"] == "standard"


def test_the_api_server_validates_an_httproute_by_its_schema(cluster, kubectl):
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": f"r-{uuid.uuid4().hex[:6]}", "namespace": "default"},
        "spec": {
            "hostnames": ["shop.example.com"],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}],
        },
    }
    _apply(kubectl, cluster, route, check=True)
    route["spec"]["rules"][0]["matches"][0]["path"]["type"] = "Sideways"
    refused = _apply(kubectl, cluster, route)
    assert refused.returncode != 0
    assert "Sideways" in refused.stderr


def test_the_api_server_validates_a_certificate_by_its_schema(cluster, kubectl):
    certificate = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": f"c-{uuid.uuid4().hex[:6]}", "namespace": "default"},
        "spec": {
            "secretName": "shop-tls",
            "dnsNames": ["shop.example.com"],
            "issuerRef": {"kind": "ClusterIssuer", "name": "letsencrypt"},
        },
    }
    _apply(kubectl, cluster, certificate, check=True)
    del certificate["spec"]["issuerRef"]
    refused = _apply(kubectl, cluster, certificate)
    assert refused.returncode != 0
    assert "issuerRef" in refused.stderr


def test_a_bundle_is_fetched_into_an_empty_cache_once(tmp_path: Path, monkeypatch):
    """A fresh clone with an empty cache gets the CRDs from the module proxy (here through
    Go's module cache), and the next lab finds them in its own cache."""
    monkeypatch.setenv("WHARF_LAB_CACHE", str(tmp_path))
    said: list[str] = []
    files = crds.fetch(crds.GATEWAY_API, said.append)
    assert [f.name for f in files] == sorted(crds.GATEWAY_API.files)
    assert files[0].parent == tmp_path / "crds" / "gateway-api-v1.6.3"
    assert said == ["crd bundle gateway-api: fetching sigs.k8s.io/gateway-api@v1.6.3"]
    assert crds.fetch(crds.GATEWAY_API, said.append) == files
    assert len(said) == 1  # cached: not fetched again


def test_an_unknown_bundle_is_refused_by_name():
    with pytest.raises(crds.CrdBundleError, match=r"knative.*known: gateway-api, cert-manager"):
        crds.bundles(["gateway-api", "knative"])
