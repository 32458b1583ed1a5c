"""The lab's container logs: a log file per simulated container, served by kwok as a kubelet would.

kwok simulates pods without running them, so nothing writes their output. This process (one per
lab cluster, started and stopped with it) does what a container runtime does for logging: for
each pod scheduled on a node, it creates one file per container in the kubelet's layout
(`<cluster>/pod-logs/<namespace>_<pod>_<uid>/<container>/0.log`, CRI log format) with a first
line saying the container started, and a kwok `Logs` object named after the pod that points kwok
at those files (owned by the pod, so it goes with it). kube-apiserver then proxies
`kubectl logs` (also `-f`) to kwok's kubelet endpoint, which reads the files. Tests and the demo
write further lines with `LabCluster.write_pod_log`. Part of the lab, not of Wharf.

The lab starts it as a component of each cluster (`main(<cluster directory>)`).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

LOGS_API = "/apis/kwok.x-k8s.io/v1alpha1"
LOG_DIRECTORY = "pod-logs"


def cri_line(text: str, at: dt.datetime | None = None, stream: str = "stdout") -> str:
    """One line as a container runtime writes it: time, stream, full-line tag, text."""
    stamp = (at or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp} {stream} F {text}\n"


def container_log(root: Path, namespace: str, pod: str, uid: str, container: str) -> Path:
    return root / f"{namespace}_{pod}_{uid}" / container / "0.log"


def append(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.writelines(cri_line(line) for line in lines)


def _items(http: httpx.Client, path: str, **params: str) -> list[dict[str, Any]]:
    response = http.get(path, params=params)
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json().get("items", [])
    return items


def logs_object(pod: dict[str, Any], root: Path) -> dict[str, Any]:
    """The kwok Logs object naming each container's file; owned by the pod."""
    meta = pod["metadata"]
    containers = [c["name"] for c in pod["spec"].get("containers", [])]
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Logs",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}
            ],
        },
        "spec": {
            "logs": [
                {
                    "containers": [name],
                    "logsFile": str(
                        container_log(root, meta["namespace"], meta["name"], meta["uid"], name)
                    ),
                    "follow": True,
                }
                for name in containers
            ]
        },
    }


def run_once(http: httpx.Client, root: Path, known: set[str]) -> None:
    """Give every scheduled pod not seen yet its files and its Logs object."""
    for pod in _items(http, "/api/v1/pods", fieldSelector="spec.nodeName!="):
        meta = pod["metadata"]
        if meta["uid"] in known:
            continue
        node = pod["spec"]["nodeName"]
        for container in pod["spec"].get("containers", []):
            name = container["name"]
            path = container_log(root, meta["namespace"], meta["name"], meta["uid"], name)
            if not path.exists():
                append(path, [f"container {name} started on {node}"])
        response = http.post(
            f"{LOGS_API}/namespaces/{meta['namespace']}/logs", json=logs_object(pod, root)
        )
        if response.status_code == 409:  # a Logs of a pod of the same name not yet collected
            existing = http.get(f"{LOGS_API}/namespaces/{meta['namespace']}/logs/{meta['name']}")
            owners = existing.json().get("metadata", {}).get("ownerReferences", [])
            if existing.is_success and all(o.get("uid") != meta["uid"] for o in owners):
                http.delete(f"{LOGS_API}/namespaces/{meta['namespace']}/logs/{meta['name']}")
                continue  # made next round
        elif response.status_code not in (201, 404):  # 404: the namespace is going away
            response.raise_for_status()
        known.add(meta["uid"])


def main(directory: str, interval: float = 0.5) -> None:
    from wharf.lab.lab import LabCluster

    cluster = LabCluster(Path(directory))
    known: set[str] = set()
    while True:
        try:
            with cluster.http(timeout=10.0) as http:
                while True:
                    run_once(http, cluster.pod_log_dir, known)
                    time.sleep(interval)
        except (httpx.HTTPError, OSError) as exc:
            print(f"pod-logs: {type(exc).__name__}: {exc}", flush=True)
            time.sleep(1.0)
