"""Running Wharf on Kubernetes: the Helm chart lints, renders what a production install needs,
and passes a server-side dry run in a lab cluster; a broken chart fails the same checks.
The server's /metrics counts reconciles per cluster (what the chart's scrape port serves)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import Wharf, wait_for
from wharf.lab import Lab, LabCluster
from wharf.lab.build import build_helm

CHART = Path(__file__).resolve().parents[2] / "deploy" / "chart" / "wharf"
INSTALL = (
    "--set",
    "database.url=postgresql+psycopg://wharf:pw@postgres:5432/wharf",
    "--set",
    "secretKey.value=a-long-sealing-passphrase",
)

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def helm() -> Run:
    """helm, built from its Go module into the lab cache when missing (CI starts clean)."""
    binary = build_helm(progress=lambda _: None)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, timeout=120, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr}")
        return result

    return run


@pytest.fixture(scope="module")
def namespace(lab: Lab) -> Iterator[str]:
    cluster = lab.clusters()[0]
    name = f"wharf-chart-{uuid.uuid4().hex[:6]}"
    _kubectl(lab, cluster, "create", "namespace", name)
    yield name
    _kubectl(lab, cluster, "delete", "namespace", name, "--wait=false")


def _kubectl(
    lab: Lab, cluster: LabCluster, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [str(lab.binaries.path("kubectl")), f"--kubeconfig={cluster.kubeconfig}", *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60, check=False)


def _dry_run(lab: Lab, namespace: str, rendered: str) -> subprocess.CompletedProcess[str]:
    """What the API server says of every object, admission and schema included; stores nothing."""
    cluster = lab.clusters()[0]
    return _kubectl(
        lab, cluster, "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=rendered
    )


def _objects(rendered: str) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in yaml.safe_load_all(rendered) if o}


def test_chart_lints_and_renders_a_production_install(helm: Run) -> None:
    helm("lint", "--strict", str(CHART), *INSTALL)
    objects = _objects(helm("template", "wharf", str(CHART), *INSTALL).stdout)
    assert {"Deployment", "Service", "Secret", "ServiceAccount", "PodDisruptionBudget"} <= set(
        objects
    )
    deployment = objects["Deployment"]["spec"]
    assert deployment["replicas"] == 3
    pod = deployment["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in container["env"]}
    # The database URL and the sealing key come from Secrets, never inline in the pod spec.
    assert env["WHARF_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "wharf-database"
    assert env["WHARF_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "wharf-secret-key"
    # Each replica holds leases under its pod's name.
    assert env["WHARF_REPLICA"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["WHARF_LEASE_SECONDS"]["value"] == "15"
    assert "postgres" not in yaml.safe_dump(pod)
    assert container["resources"]["requests"] == {"cpu": "250m", "memory": "384Mi"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    port = objects["Service"]["spec"]["ports"][0]
    assert port["name"] == "http"


def test_chart_renders_a_service_monitor_with_the_scrape_token(helm: Run) -> None:
    values = [*INSTALL, "--set", "serviceMonitor.enabled=true", "--set", "metrics.tokenSecret=s"]
    helm("lint", "--strict", str(CHART), *values)
    monitor = _objects(helm("template", "wharf", str(CHART), *values).stdout)["ServiceMonitor"]
    endpoint = monitor["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert endpoint["authorization"]["credentials"] == {"name": "s", "key": "token"}


def test_chart_without_a_database_secret_is_refused_by_name(helm: Run) -> None:
    result = helm("template", "wharf", str(CHART), "--set", "secretKey.value=k", check=False)
    assert result.returncode != 0
    assert "database.existingSecret" in result.stderr


def test_chart_passes_a_server_side_dry_run(helm: Run, lab: Lab, namespace: str) -> None:
    rendered = helm("template", "wharf", str(CHART), "-n", namespace, *INSTALL).stdout
    result = _dry_run(lab, namespace, rendered)
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/wharf created (server dry run)" in result.stdout
    # It stored nothing.
    cluster = lab.clusters()[0]
    listed = _kubectl(lab, cluster, "get", "deployments", "-n", namespace, "-o", "name")
    assert listed.stdout.strip() == ""


def test_a_broken_chart_fails_the_dry_run(helm: Run, lab: Lab, namespace: str) -> None:
    broken = [*INSTALL, "--set", "resources.requests.cpu=plenty"]
    rendered = helm("template", "wharf", str(CHART), "-n", namespace, *broken).stdout
    result = _dry_run(lab, namespace, rendered)
    assert result.returncode != 0
    assert "Deployment" in result.stderr
    assert "quantities must match" in result.stderr


def test_metrics_count_reconciles_per_cluster(wharf: Wharf) -> None:
    def counted() -> bool:
        text = wharf.admin.get("/metrics").text
        return all(
            f'wharf_cluster_reconciles_total{{cluster="{c}",controller="clusters"}}' in text
            for c in ("lab1", "lab2")
        )

    wait_for(counted, what="reconciles of both clusters in /metrics")
