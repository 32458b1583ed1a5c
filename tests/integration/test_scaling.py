"""Scaling that really scales, in both lab clusters: the autoscaler from the application's
parameters moved by simulated CPU use (through kwok and metrics-server), scheduled windows
driven by an injected clock, and scaling by hand against the quota."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from tests.integration.conftest import Api, Wharf, cluster_writes, wait_for
from wharf.lab import LabCluster
from wharf.lab.lab import USAGE_CPU_ANNOTATION

IMAGE = "registry.example/shop/web:1.4.2"


@pytest.fixture
def place(wharf: Wharf):
    """A tenant, its project placed on both clusters, a developer and a viewer of it."""
    dev, viewer = wharf.user(), wharf.user()
    tenant = wharf.tenant({"cpu": "8", "memory": "16Gi", "pods": "40"})
    wharf.project(
        tenant,
        "shop",
        {"cpu": "4", "memory": "8Gi", "pods": "20"},
        members=[{"user": dev.user, "role": "developer"}, {"user": viewer.user, "role": "viewer"}],
    )
    wharf.wait_placed(tenant, "shop")
    return tenant, dev, viewer


def application(
    tenant: str, name: str, template: str = "web-service", **spec: Any
) -> dict[str, Any]:
    return {
        "kind": "Application",
        "metadata": {"name": name, "tenant": tenant},
        "spec": {
            "project": "shop",
            "environment": "dev",
            "template": {"name": template, "version": "1.0.0"},
            "values": {"name": name, "image": IMAGE, "replicas": 2},
            **spec,
        },
    }


def get(kubectl, cluster: LabCluster, namespace: str, *what: str) -> dict[str, Any]:
    out = kubectl(cluster, "-n", namespace, "get", *what, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


def delivered(kubectl, cluster: LabCluster, namespace: str, kind: str, name: str) -> bool:
    args = ("-n", namespace, "get", kind, name, "-o", "name")
    return kubectl(cluster, *args, check=False).returncode == 0


def deployment_writes(cluster: LabCluster, namespace: str, name: str) -> int:
    """Wharf's writes to the Deployment, from the cluster's audit log."""
    return sum(
        1
        for e in cluster_writes(cluster, namespace)
        if e["objectRef"].get("resource") == "deployments" and e["objectRef"].get("name") == name
    )


def replicas(kubectl, cluster: LabCluster, namespace: str, name: str) -> int:
    return int(get(kubectl, cluster, namespace, "deployment", name)["spec"]["replicas"])


def set_cpu_use(kubectl, cluster: LabCluster, namespace: str, app: str, cpu: str) -> None:
    """Every pod of the application now uses `cpu` (kwok's simulated use)."""
    kubectl(
        cluster,
        "-n",
        namespace,
        "annotate",
        "pods",
        "-l",
        f"app.kubernetes.io/name={app}",
        "--overwrite",
        f"{USAGE_CPU_ANNOTATION}={cpu}",
    )


def wait_replicas(kubectl, wharf: Wharf, namespace: str, name: str, check, what: str) -> None:
    for cluster in wharf.lab.clusters():
        wait_for(lambda c=cluster: delivered(kubectl, c, namespace, "deployment", name))
        wait_for(
            lambda c=cluster: check(replicas(kubectl, c, namespace, name)),
            timeout=180,
            what=f"{cluster.name}: {name} {what}",
        )


def test_cpu_use_scales_the_application_up_and_back_in_both_clusters(wharf: Wharf, place, kubectl):
    tenant, dev, _ = place
    namespace = f"{tenant}--shop-dev"
    autoscaling = {
        "minReplicas": 2,
        "maxReplicas": 5,
        "cpu": 50,
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}},
    }
    path = f"/api/v1/tenants/{tenant}/applications/web"
    dev.ok("PUT", path, json=application(tenant, "web", autoscaling=autoscaling))

    def measuring(cluster: LabCluster) -> bool:
        hpa = get(kubectl, cluster, namespace, "hpa", "web")
        conditions = {c["type"]: c["status"] for c in hpa["status"].get("conditions", [])}
        return conditions.get("ScalingActive") == "True"

    for cluster in wharf.lab.clusters():
        wait_for(lambda c=cluster: delivered(kubectl, c, namespace, "hpa", "web"))
        hpa = get(kubectl, cluster, namespace, "hpa", "web")["spec"]
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
        assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 5
        wait_for(lambda c=cluster: measuring(c), timeout=120, what=f"{cluster.name} HPA measuring")
        assert replicas(kubectl, cluster, namespace, "web") == 2

    written = {c.name: deployment_writes(c, namespace, "web") for c in wharf.lab.clusters()}
    # 200m of a 100m request is 400 % of the 50 % target: up to the maximum.
    for cluster in wharf.lab.clusters():
        set_cpu_use(kubectl, cluster, namespace, "web", "200m")
    wait_replicas(kubectl, wharf, namespace, "web", lambda n: n > 2, "scaled above 2")

    # Delivery leaves the autoscaler's count alone: status follows it, nothing is reverted.
    app = wait_for(
        lambda: (
            (a := dev.ok("GET", path))["status"].get("state") == "Available"
            and all(c["workloads"][0]["desired"] > 2 for c in a["status"]["clusters"].values())
            and a
        ),
        timeout=120,
        what="status showing the scaled replicas",
    )
    assert app["status"]["state"] == "Available"
    for cluster in wharf.lab.clusters():  # delivery reconciled since, and wrote nothing
        assert deployment_writes(cluster, namespace, "web") == written[cluster.name]

    for cluster in wharf.lab.clusters():
        set_cpu_use(kubectl, cluster, namespace, "web", "5m")
    wait_replicas(kubectl, wharf, namespace, "web", lambda n: n == 2, "back to 2")


class Clock:
    """The schedule controller's clock, moved by the test."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def _nudge(wharf: Wharf, key: tuple[str, str]) -> None:
    """Have the schedule controller look at the application now (not at its next resync)."""
    platform = wharf.platform
    platform._loop.call_soon_threadsafe(platform.schedules.controller.queue.add, key)


def test_a_scheduled_window_raises_min_replicas_at_its_start_and_reverts_at_its_end(
    wharf: Wharf, place, kubectl
):
    tenant, dev, _ = place
    namespace = f"{tenant}--shop-dev"
    # Monday 2 March 2026, 07:00 UTC: 08:00 in Berlin, an hour before the window opens.
    clock = Clock(dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.UTC))
    wharf.platform.schedules.clock = clock
    window = {
        "name": "business-hours",
        "start": "0 9 * * 1-5",
        "end": "0 18 * * 1-5",
        "timeZone": "Europe/Berlin",
        "minReplicas": 4,
    }
    autoscaling = {
        "minReplicas": 2,
        "maxReplicas": 6,
        "cpu": 80,
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}},
        "schedules": [window],
    }
    path = f"/api/v1/tenants/{tenant}/applications/web"
    dev.ok("PUT", path, json=application(tenant, "web", autoscaling=autoscaling))

    def schedule() -> dict[str, Any]:
        return dev.ok("GET", path)["status"].get("schedule") or {}

    def hpa_min(cluster: LabCluster) -> int:
        return int(get(kubectl, cluster, namespace, "hpa", "web")["spec"]["minReplicas"])

    closed = wait_for(lambda: schedule().get("nextChange") and schedule(), what="schedule")
    assert closed["window"] is None
    assert closed["nextChange"] == "2026-03-02T08:00:00Z"
    for cluster in wharf.lab.clusters():
        wait_for(lambda c=cluster: delivered(kubectl, c, namespace, "hpa", "web"))
        wait_for(lambda c=cluster: hpa_min(c) == 2, what=f"{cluster.name} HPA delivered")

    clock.now = dt.datetime(2026, 3, 2, 8, 0, 30, tzinfo=dt.UTC)
    _nudge(wharf, (tenant, "web"))
    opened = wait_for(lambda: schedule().get("window") == "business-hours" and schedule())
    assert opened["minReplicas"] == 4
    assert opened["since"] == "2026-03-02T08:00:30Z"
    assert opened["nextChange"] == "2026-03-02T17:00:00Z"
    for cluster in wharf.lab.clusters():
        wait_for(lambda c=cluster: hpa_min(c) == 4, what=f"{cluster.name} HPA min 4")
    wait_replicas(kubectl, wharf, namespace, "web", lambda n: n == 4, "at the window's 4")

    clock.now = dt.datetime(2026, 3, 2, 17, 0, 30, tzinfo=dt.UTC)
    _nudge(wharf, (tenant, "web"))
    reverted = wait_for(lambda: schedule().get("window") is None and schedule())
    assert reverted["nextChange"] == "2026-03-03T08:00:00Z"
    for cluster in wharf.lab.clusters():
        wait_for(lambda c=cluster: hpa_min(c) == 2, what=f"{cluster.name} HPA min back to 2")
    wait_replicas(kubectl, wharf, namespace, "web", lambda n: n == 2, "back to 2")


@pytest.mark.parametrize(
    ("window", "field", "says"),
    [
        ({"start": "0 25 * * *"}, "spec.autoscaling.schedules.0.start", "not a cron expression"),
        ({"end": "0 0 30 2 *"}, "spec.autoscaling.schedules[0].end", "never fires"),
        ({"timeZone": "Europe/Atlantis"}, "spec.autoscaling.schedules.0.timeZone", "IANA"),
    ],
)
def test_a_window_that_cannot_work_is_refused_naming_the_field(
    wharf: Wharf, place, window: dict[str, str], field: str, says: str
):
    tenant, dev, _ = place
    schedule = {"name": "w", "start": "0 9 * * *", "end": "0 18 * * *", "minReplicas": 3}
    autoscaling = {"maxReplicas": 4, "cpu": 50, "schedules": [{**schedule, **window}]}
    path = f"/api/v1/tenants/{tenant}/applications/bad"
    answer = dev.put(path, application(tenant, "bad", autoscaling=autoscaling))
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    assert says in answer.json()["message"]
    assert dev.get(path).status_code == 404  # nothing stored


def _scale(api: Api, tenant: str, name: str, **body: Any):
    return api.request("POST", f"/api/v1/tenants/{tenant}/applications/{name}/scale", json=body)


def test_scaling_by_hand_is_checked_against_quota_authorized_and_audited(
    wharf: Wharf, place, kubectl
):
    tenant, dev, viewer = place
    namespace = f"{tenant}--shop-dev"
    dev.ok(
        "PUT",
        f"/api/v1/tenants/{tenant}/applications/job",
        json=application(tenant, "job", "worker"),
    )
    wait_replicas(kubectl, wharf, namespace, "job", lambda n: n == 2, "at 2")

    answer = _scale(dev, tenant, "job", replicas=3)
    assert answer.status_code == 200, answer.text
    assert answer.json()["spec"]["replicas"] == 3
    wait_replicas(kubectl, wharf, namespace, "job", lambda n: n == 3, "at 3")
    assert _scale(dev, tenant, "job", replicas=1, cluster="lab2").status_code == 200
    lab1, lab2 = wharf.lab.clusters()
    wait_for(lambda: replicas(kubectl, lab2, namespace, "job") == 1, what="lab2 at 1")
    assert replicas(kubectl, lab1, namespace, "job") == 3

    # 60 pods of 100m is 6 CPUs: more than the namespace's share of the project's 4.
    refused = _scale(dev, tenant, "job", replicas=60)
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "quota_exceeded"
    assert "namespace quota" in refused.json()["message"]
    unknown = _scale(dev, tenant, "job", replicas=2, cluster="lab9")
    assert unknown.status_code == 422
    assert unknown.json()["field"] == "cluster"

    # A viewer may look, not scale; nor may the developer's read-only token; another tenant's
    # developer does not learn it exists.
    assert _scale(viewer, tenant, "job", replicas=5).status_code == 403
    body = {"name": "ci", "readOnly": True, "expiresIn": 3600}
    read_only = Api(wharf.client, dev.ok("POST", "/api/v1/tokens", json=body)["token"], dev.user)
    assert _scale(read_only, tenant, "job", replicas=5).status_code == 403
    stranger = wharf.user()
    other = wharf.tenant({"cpu": "1", "memory": "1Gi", "pods": "4"}, admins=[stranger.user])
    assert other
    hidden = _scale(stranger, tenant, "job", replicas=5)
    assert hidden.status_code == 404, hidden.text
    missing = _scale(stranger, tenant, "nojob", replicas=5)
    assert hidden.json()["message"] == missing.json()["message"].replace("nojob", "job")
    assert dev.ok("GET", f"/api/v1/tenants/{tenant}/applications/job")["spec"]["replicas"] == 3

    # An autoscaled workload is its autoscaler's to scale.
    autoscaling = {"maxReplicas": 3, "cpu": 50}
    body = application(tenant, "web", autoscaling=autoscaling)
    dev.ok("PUT", f"/api/v1/tenants/{tenant}/applications/web", json=body)
    conflict = _scale(dev, tenant, "web", replicas=3)
    assert conflict.status_code == 409, conflict.text
    assert "HorizontalPodAutoscaler" in conflict.json()["message"]

    events = dev.ok("GET", f"/api/v1/audit?tenant={tenant}&kind=Application&name=job")["items"]
    scaled = [e for e in events if e["actor"] == dev.user and e["outcome"] == "allowed"]
    assert any(c["path"] == "spec.replicas" for e in scaled for c in e["diff"]), scaled
    denied = [e for e in events if e["actor"] == viewer.user]
    assert denied
    assert denied[0]["outcome"] == "denied"
