"""Up, down and recovery after a crash, on a lab of its own (one small cluster)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from wharf.lab import Lab, LabError, find_binaries
from wharf.lab.lab import COMPACT_COMPONENTS, COMPONENTS, LabCluster


def _wharf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wharf", *args], capture_output=True, text=True, timeout=300
    )


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_up_down_and_recovery_from_a_crash(tmp_path):
    binaries = find_binaries()
    assert binaries is not None
    directory = tmp_path / "lab"
    lab = Lab(directory, binaries)
    try:
        up = _wharf("lab", "up", "--clusters", "1", "--nodes", "1", "--dir", str(directory))
        assert up.returncode == 0, up.stderr
        assert "lab1\thttps://127.0.0.1:" in up.stdout
        cluster = lab.cluster("lab1")
        first = cluster.running()
        assert all(first.values())

        # A second `up` on a healthy lab changes nothing.
        again = _wharf("lab", "up", "--clusters", "1", "--nodes", "1", "--dir", str(directory))
        assert again.returncode == 0, again.stderr
        assert "already up" in again.stderr
        assert cluster.running() == first

        # A crash: the apiserver dies; the others are left running as stale processes.
        apiserver = first["kube-apiserver"]
        assert apiserver is not None
        os.kill(apiserver, signal.SIGKILL)
        status = _wharf("lab", "status", "--dir", str(directory))
        assert status.returncode == 1
        assert "kube-apiserver=down" in status.stdout

        recovered = _wharf("lab", "up", "--clusters", "1", "--nodes", "1", "--dir", str(directory))
        assert recovered.returncode == 0, recovered.stderr
        assert "stale process" in recovered.stderr
        now = cluster.running()
        assert all(now.values())
        # Every process is new: the stale ones were found by pid file and stopped.
        assert not set(now.values()) & set(first.values())
        for pid in first.values():
            assert pid is not None
            assert _gone(pid)
        assert lab.is_up()
    finally:
        down = _wharf("lab", "down", "--dir", str(directory))
    assert down.returncode == 0
    assert all(pid is None for pid in cluster.running().values())
    assert set(cluster.running()) == set(COMPONENTS)


def test_up_reports_a_process_that_fails_to_start_and_cleans_up(tmp_path, monkeypatch):
    binaries = find_binaries()
    assert binaries is not None
    lab = Lab(tmp_path / "lab", binaries)
    original = LabCluster.command

    def etcd_with_a_bad_flag(self: LabCluster, component: str) -> list[str]:
        argv = original(self, component)
        return [*argv, "--no-such-flag"] if component == "etcd" else argv

    monkeypatch.setattr(LabCluster, "command", etcd_with_a_bad_flag)
    with pytest.raises(LabError, match="lab1: etcd exited; last lines") as failure:
        lab.up(clusters=1, nodes=1, progress=lambda _: None, timeout=30)
    assert "no-such-flag" in str(failure.value)
    assert all(pid is None for pid in lab.cluster("lab1").running().values())


def test_a_compact_lab_shares_one_etcd_and_keeps_its_clusters_apart(tmp_path):
    """Many clusters on one machine: each compact cluster is an API server (with its
    controllers, scheduler and kwok) keeping its objects in the first cluster's etcd under
    a prefix of its own, and is still a cluster of its own to whoever uses it."""
    binaries = find_binaries()
    assert binaries is not None
    directory = tmp_path / "lab"
    lab = Lab(directory, binaries)
    try:
        up = _wharf(
            "lab", "up", "--compact", "--clusters", "3", "--nodes", "1", "--crds", "none",
            "--dir", str(directory),
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        one, two, three = lab.clusters()
        assert set(one.running()) == {"etcd", *COMPACT_COMPONENTS}
        assert set(two.running()) == set(three.running()) == set(COMPACT_COMPONENTS)
        assert all(pid is not None for c in (one, two, three) for pid in c.running().values())
        assert not (two.directory / "etcd-data").exists()

        # A namespace and a Deployment in lab2 are lab2's: lab3 (same etcd) has neither,
        # and lab2's own controllers, scheduler and kwok run the Deployment's pod.
        kubectl = [str(binaries.path("kubectl"))]
        with two.http() as client:
            client.post(
                "/api/v1/namespaces", json={"metadata": {"name": "only-in-two"}}
            ).raise_for_status()
        deployment = subprocess.run(
            [*kubectl, "--kubeconfig", str(two.kubeconfig), "-n", "only-in-two", "create",
             "deployment", "web", "--image=registry.example/web:1"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert deployment.returncode == 0, deployment.stderr
        wait = subprocess.run(
            [*kubectl, "--kubeconfig", str(two.kubeconfig), "-n", "only-in-two", "wait",
             "--for=condition=Available", "deployment/web", "--timeout=120s"],
            capture_output=True, text=True, timeout=150,
        )  # fmt: skip
        assert wait.returncode == 0, wait.stderr
        with three.http() as client:
            assert client.get("/api/v1/namespaces/only-in-two").status_code == 404
            pods = client.get("/api/v1/pods").json()["items"]
            assert not [p for p in pods if p["metadata"]["namespace"] == "only-in-two"]

        status = _wharf("lab", "status", "--dir", str(directory), "-o", "json")
        assert status.returncode == 0, status.stdout
        assert all(row["memoryMiB"] > 0 for row in json.loads(status.stdout))
        # More than a full lab takes asks for compact, and says so.
        refused = _wharf("lab", "up", "--clusters", "9", "--dir", str(tmp_path / "other"))
        assert refused.returncode != 0
        assert "--compact" in refused.stderr
    finally:
        down = _wharf("lab", "down", "--dir", str(directory))
    assert down.returncode == 0
    assert all(pid is None for c in lab.clusters() for pid in c.running().values())
