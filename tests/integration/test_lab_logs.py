"""The lab's container logs: every simulated container gets a log file (kwok's Logs object points
kwok at it), and `kubectl logs` — also `--follow` — reads it through the API server, in every lab
cluster."""

from __future__ import annotations

import json
import select
import subprocess
import uuid
from typing import IO

import pytest

from tests.integration.conftest import wait_for
from wharf.lab import Lab, LabCluster


@pytest.fixture(params=["lab1", "lab2"])
def cluster(lab: Lab, request: pytest.FixtureRequest) -> LabCluster:
    return lab.cluster(request.param)


def _pod(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "registry.example/busy:1.0"}]},
    }


def _read_line(stream: IO[str]) -> str:
    ready, _, _ = select.select([stream], [], [], 30)
    assert ready, "no line within 30s on the followed log"
    return stream.readline().strip()


def test_kubectl_logs_reads_what_a_simulated_pod_writes(cluster, kubectl, lab):
    namespace = f"logs-{uuid.uuid4().hex[:6]}"
    kubectl(cluster, "create", "namespace", namespace)
    kubectl(cluster, "-n", namespace, "apply", "-f", "-", stdin=json.dumps(_pod("talker")))

    def logs() -> str | None:
        result = kubectl(cluster, "-n", namespace, "logs", "talker", check=False)
        return result.stdout if result.returncode == 0 and result.stdout else None

    first = wait_for(logs, timeout=60, what=f"{cluster.name}: kubectl logs talker")
    assert "container main started on" in first

    cluster.write_pod_log(namespace, "talker", ["order 17 paid", "order 18 paid"])
    out = kubectl(cluster, "-n", namespace, "logs", "talker", "--tail=2").stdout
    assert out.splitlines() == ["order 17 paid", "order 18 paid"]

    # Followed, a line written later arrives on the open stream.
    follow = subprocess.Popen(
        [
            str(lab.binaries.path("kubectl")),
            f"--kubeconfig={cluster.kubeconfig}",
            "-n",
            namespace,
            "logs",
            "-f",
            "--tail=1",
            "talker",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        # The last line already there says the stream is open; the next one comes as written.
        assert _read_line(follow.stdout) == "order 18 paid"
        cluster.write_pod_log(namespace, "talker", ["order 19 paid"])
        assert _read_line(follow.stdout) == "order 19 paid"
    finally:
        follow.kill()
        follow.wait()
