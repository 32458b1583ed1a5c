"""Start, supervise and stop real Kubernetes control planes on loopback.

Each lab cluster runs etcd, kube-apiserver (TLS, client certificates, RBAC, service-account
tokens), kube-controller-manager, kube-scheduler, kwok, which keeps simulated nodes Ready, moves
scheduled pods to Running and reports their simulated CPU and memory use as a kubelet would, and
metrics-server, which serves that use as the `metrics.k8s.io` API (for `kubectl top` and HPAs).
Every process binds to 127.0.0.1 on a free port and records its pid and start time in a pid
file, so that a later `up` or `down` finds exactly the processes it started (never by process
name), even after a crash of the command that started them.

A compact lab (for many clusters) runs less per cluster: kube-apiserver, controller-manager,
scheduler and kwok, every API server keeping its objects in one etcd (the first cluster's)
under a key prefix of its own; no metrics-server, storage provisioner or pod log files.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import yaml

from wharf.core.paths import state_home
from wharf.lab import crds, podlogs, provisioner
from wharf.lab.build import LabBinaries, find_binaries
from wharf.lab.pki import CertificateAuthority, KeyPair, signing_key

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
# Where metrics-server scrapes a simulated node's kubelet resource metrics (kwok's Metric path).
METRICS_PATH_ANNOTATION = "metrics.k8s.io/resource-metrics-path"
# A pod's simulated use, read by kwok's ClusterResourceUsage (e.g. "250m", "300Mi").
USAGE_CPU_ANNOTATION = "kwok.x-k8s.io/usage-cpu"
USAGE_MEMORY_ANNOTATION = "kwok.x-k8s.io/usage-memory"
METRICS_SERVICE = ("kube-system", "metrics-server")
# The order to start in; stopping goes the other way.
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "provisioner",  # the lab's stand-in for a storage driver (wharf.lab.provisioner)
    "pod-logs",  # the containers' log files, which kwok serves (wharf.lab.podlogs)
    "metrics-server",
)

# A compact cluster's processes; the first cluster runs the shared etcd besides.
COMPACT_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# A compact cluster's Go processes keep their heaps near these soft limits (GOMEMLIMIT).
COMPACT_MEMORY = {
    "kube-apiserver": "200MiB",
    "kube-controller-manager": "60MiB",
    "kube-scheduler": "40MiB",
    "kwok": "40MiB",
}
# The lab's own set-up writes (nodes, storage classes, the metrics API) wait this long: thirty
# compact clusters coming up at once keep two cores busy past a health check's 5 s.
SETUP_TIMEOUT = 60.0
MAX_CLUSTERS = 8  # full clusters: each runs 8 processes
MAX_COMPACT_CLUSTERS = 40

Progress = Callable[[str], None]


class LabError(Exception):
    """The lab could not be brought up, or is not in the state a command needs."""


def default_lab_dir() -> Path:
    return Path(os.environ.get("WHARF_LAB_DIR") or state_home() / "lab")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _free_ports(count: int) -> list[int]:
    """Ports free on loopback now, chosen below the kernel's ephemeral range.

    A port the kernel hands out for port 0 is also one it may give any outgoing connection
    (the apiserver's to etcd, say) before our component binds it; ports below that range are
    never handed out on their own, so a chosen port stays free until the component takes it.
    All sockets stay open until all are chosen, so no repeats."""
    low, high = _ephemeral_range()
    top = low - 1 if low > 12000 else 65535
    bottom = 10000 if low > 12000 else high + 1
    rng = random.SystemRandom()
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.bind(("127.0.0.1", rng.randint(bottom, top)))
            except OSError:
                continue  # taken: try another
            ports.append(sock.getsockname()[1])
        return ports


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of pid (clock ticks since boot), None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return None
    return fields[19]


@dataclass(frozen=True)
class PidFile:
    path: Path

    def write(self, pid: int) -> None:
        start = _process_start_time(pid) or ""
        self.path.write_text(f"{pid} {start}\n")

    def running_pid(self) -> int | None:
        """The recorded pid if that very process still runs (pid reuse is caught by start time)."""
        try:
            pid_text, start = self.path.read_text().split()
        except (OSError, ValueError):
            return None
        pid = int(pid_text)
        return pid if _process_start_time(pid) == start else None


def _encode(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_dict(
    entries: list[tuple[str, str, Path, KeyPair]], current: str | None = None
) -> dict[str, Any]:
    """A kubeconfig with one context per (name, server, ca, client pair), certificates inline."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [
            {"name": n, "cluster": {"server": s, "certificate-authority-data": _encode(ca)}}
            for n, s, ca, _ in entries
        ],
        "users": [
            {
                "name": n,
                "user": {
                    "client-certificate-data": _encode(pair.cert),
                    "client-key-data": _encode(pair.key),
                },
            }
            for n, _, _, pair in entries
        ],
        "contexts": [{"name": n, "context": {"cluster": n, "user": n}} for n, _, _, _ in entries],
        "current-context": current or entries[0][0],
    }


def _write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)
    return path


class LabCluster:
    """One lab cluster: its directory, ports, certificates and processes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = directory.name
        self.pki_dir = directory / "pki"
        self.run_dir = directory / "run"
        self.log_dir = directory / "logs"
        self._ports: dict[str, int] | None = None
        self._profile: dict[str, Any] | None = None

    # -- layout ---------------------------------------------------------------------------
    @property
    def ports(self) -> dict[str, int]:
        if self._ports is None:
            self._ports = json.loads((self.directory / "ports.json").read_text())
        return self._ports

    @property
    def profile(self) -> dict[str, Any]:
        """{"compact": bool, "etcd": the etcd its API server uses (a compact lab's shared one)}"""
        if self._profile is None:
            try:
                self._profile = json.loads((self.directory / "profile.json").read_text())
            except (OSError, ValueError):
                self._profile = {"compact": False, "etcd": None}
        return self._profile

    @property
    def components(self) -> tuple[str, ...]:
        """The processes this cluster runs, in the order to start them."""
        if not self.profile["compact"]:
            return COMPONENTS
        own_etcd = self.profile["etcd"] == self.etcd_url_of_own()
        return ("etcd", *COMPACT_COMPONENTS) if own_etcd else COMPACT_COMPONENTS

    def etcd_url_of_own(self) -> str:
        return f"http://127.0.0.1:{self.ports['etcd']}"

    @property
    def etcd_url(self) -> str:
        return str(self.profile["etcd"] or self.etcd_url_of_own())

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['kube-apiserver']}"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (group system:masters)."""
        return self.directory / "kubeconfig"

    @property
    def ca(self) -> CertificateAuthority:
        return CertificateAuthority(self.pki_dir)

    @property
    def audit_log(self) -> Path:
        """The apiserver's audit log of writes (JSON lines)."""
        return self.log_dir / "audit.log"

    def writes_by(self, user: str) -> list[dict[str, Any]]:
        """Audit events of every write `user` has made to this cluster so far."""
        try:
            lines = self.audit_log.read_text().splitlines()
        except FileNotFoundError:
            return []
        events = [json.loads(line) for line in lines if line.strip()]
        return [
            e
            for e in events
            if e.get("user", {}).get("username") == user and e.get("stage") == "ResponseComplete"
        ]

    @property
    def pod_log_dir(self) -> Path:
        """Where simulated containers' logs are, in the kubelet's layout (wharf.lab.podlogs)."""
        return self.directory / podlogs.LOG_DIRECTORY

    def pod_log(
        self, namespace: str, pod: str, container: str | None = None, wait: float = 30.0
    ) -> Path:
        """The log file of a container of a pod (its first container when not named). The
        pod-logs component makes it within a poll of the pod being scheduled: wait that long."""
        pattern = f"{namespace}_{pod}_*/{container or '*'}/0.log"
        deadline = time.monotonic() + wait
        while not (found := sorted(self.pod_log_dir.glob(pattern))):
            if time.monotonic() >= deadline:
                raise LabError(f"{self.name}: no log file for pod {namespace}/{pod} after {wait} s")
            time.sleep(0.2)
        return max(found, key=lambda p: p.stat().st_mtime)

    def write_pod_log(
        self, namespace: str, pod: str, lines: Sequence[str], container: str | None = None
    ) -> Path:
        """Append lines to what a simulated container wrote (as its runtime would)."""
        path = self.pod_log(namespace, pod, container)
        podlogs.append(path, lines)
        return path

    def pid_file(self, component: str) -> PidFile:
        return PidFile(self.run_dir / f"{component}.pid")

    def log_file(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    def user_kubeconfig(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig for a user authenticated by a client certificate of the lab's CA."""
        pair = self.ca.issue(f"user-{user}", user, groups, directory=self.pki_dir / "users")
        path = self.directory / "users" / f"{user}.kubeconfig"
        path.parent.mkdir(exist_ok=True)
        entry = (self.name, self.server, self.ca.pair.cert, pair)
        return _write_yaml(path, kubeconfig_dict([entry]))

    # -- preparing --------------------------------------------------------------------------
    def prepare(self, compact: bool = False, shared_etcd: str | None = None) -> None:
        """Choose ports, issue certificates and write kubeconfigs (certificates are kept).
        A compact cluster keeps its objects in `shared_etcd` (None: its own, which it then
        runs for the others)."""
        for d in (self.pki_dir, self.run_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        names = (
            "etcd",
            "etcd-peer",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
            "metrics-server",
        )
        self._ports = dict(zip(names, _free_ports(len(names)), strict=True))
        (self.directory / "ports.json").write_text(json.dumps(self._ports, indent=2))
        self._profile = {"compact": compact, "etcd": shared_etcd or self.etcd_url_of_own()}
        if not compact:
            self._profile["etcd"] = None
        (self.directory / "profile.json").write_text(json.dumps(self._profile, indent=2))
        ca = self.ca
        ca.issue(
            "apiserver",
            "kube-apiserver",
            server_names=(
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "10.96.0.1",
            ),
        )
        signing_key(self.pki_dir / "service-account.key")
        # The aggregator proxies metrics.k8s.io to metrics-server as this client; metrics-server
        # trusts the user it names because the apiserver's requestheader CA signed it.
        ca.issue("front-proxy-client", "front-proxy-client")
        namespace, service = METRICS_SERVICE
        ca.issue(
            "metrics-server-serving",
            "metrics-server",
            server_names=(f"{service}.{namespace}.svc", "127.0.0.1", "localhost"),
        )
        clients = {
            "admin": ("wharf-lab-admin", ("system:masters",)),
            "kube-controller-manager": ("system:kube-controller-manager", ()),
            "kube-scheduler": ("system:kube-scheduler", ()),
            "kwok": ("system:kwok-controller", ("system:masters",)),
            "metrics-server": ("system:metrics-server", ("system:masters",)),
        }
        for name, (cn, groups) in clients.items():
            pair = ca.issue(name, cn, groups)
            path = self.kubeconfig if name == "admin" else self.directory / f"{name}.kubeconfig"
            _write_yaml(path, kubeconfig_dict([(self.name, self.server, ca.pair.cert, pair)]))
        # Writes only: the lab's own components' at Metadata level (who changed what), the
        # others' (Wharf's, tenants') with their bodies too, so a test can tell a write
        # repeated with the same content from a changed object written once.
        writes = ["create", "update", "patch", "delete", "deletecollection"]
        audit_policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived"],
            "rules": [
                {
                    "level": "Metadata",
                    "verbs": writes,
                    "users": ["system:apiserver", *(cn for cn, _ in clients.values())],
                },
                {
                    "level": "Metadata",
                    "verbs": writes,
                    "userGroups": ["system:nodes", "system:serviceaccounts"],
                },
                {"level": "Request", "verbs": writes},
                {"level": "None"},
            ],
        }
        _write_yaml(self.directory / "audit-policy.yaml", audit_policy)
        configs = [*self._binaries.stages, *self._binaries.kwok_metrics]
        documents = [yaml.safe_load(p.read_text()) for p in configs]
        (self.directory / "kwok.yaml").write_text(yaml.safe_dump_all(documents))

    _binaries: LabBinaries

    def command(self, component: str) -> list[str]:
        b, p, pki, d = self._binaries, self.ports, self.pki_dir, self.directory
        loop = "127.0.0.1"
        if component == "etcd":
            return [
                str(b.path("etcd")),
                f"--name={self.name}",
                f"--data-dir={d / 'etcd-data'}",
                f"--listen-client-urls=http://{loop}:{p['etcd']}",
                f"--advertise-client-urls=http://{loop}:{p['etcd']}",
                f"--listen-peer-urls=http://{loop}:{p['etcd-peer']}",
                f"--initial-advertise-peer-urls=http://{loop}:{p['etcd-peer']}",
                f"--initial-cluster={self.name}=http://{loop}:{p['etcd-peer']}",
                "--listen-metrics-urls=",
                "--quota-backend-bytes=2147483648",
                "--auto-compaction-retention=1",
                "--log-level=warn",
            ]
        if component == "kube-apiserver":
            return [
                str(b.path("kube-apiserver")),
                f"--etcd-servers={self.etcd_url}",
                # One etcd for every compact cluster: each API server under its own prefix.
                f"--etcd-prefix=/lab/{self.name}/registry"
                if self.profile["compact"]
                else "--etcd-prefix=/registry",
                f"--bind-address={loop}",
                f"--advertise-address={loop}",
                f"--secure-port={p['kube-apiserver']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={pki / 'service-account.pub'}",
                f"--service-account-signing-key-file={pki / 'service-account.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # PodNodeSelector and PodTolerationRestriction keep tenants on their node
                # pools (docs/security.md: what a cluster must provide).
                "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,"
                "DefaultStorageClass,ResourceQuota,NodeRestriction,PodNodeSelector,"
                "PodTolerationRestriction",
                f"--audit-policy-file={d / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxsize=200",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                # The aggregation layer, for metrics-server's metrics.k8s.io.
                f"--requestheader-client-ca-file={pki / 'ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                # `kubectl logs` goes through kwok's kubelet endpoint, served with this CA's cert.
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                f"--cert-dir={pki}",
                "--profiling=false",
                "--v=0",
            ]
        if component == "kube-controller-manager":
            return [
                str(b.path("kube-controller-manager")),
                f"--kubeconfig={d / 'kube-controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={d / 'kube-controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={d / 'kube-controller-manager.kubeconfig'}",
                f"--bind-address={loop}",
                f"--secure-port={p['kube-controller-manager']}",
                f"--cert-dir={pki / 'kcm-serving'}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'service-account.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--controllers=*,-nodeipam",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                # HPAs act within seconds, so tests see them scale without waiting minutes.
                "--horizontal-pod-autoscaler-sync-period=2s",
                "--horizontal-pod-autoscaler-cpu-initialization-period=10s",
                "--horizontal-pod-autoscaler-initial-readiness-delay=5s",
                "--v=0",
            ]
        if component == "kube-scheduler":
            return [
                str(b.path("kube-scheduler")),
                f"--kubeconfig={d / 'kube-scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={d / 'kube-scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={d / 'kube-scheduler.kubeconfig'}",
                f"--bind-address={loop}",
                f"--secure-port={p['kube-scheduler']}",
                f"--cert-dir={pki / 'scheduler-serving'}",
                "--leader-elect=false",
                "--v=0",
            ]
        if component == "kwok":
            return [
                str(b.path("kwok")),
                f"--kubeconfig={d / 'kwok.kubeconfig'}",
                f"--config={d / 'kwok.yaml'}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                f"--cidr={POD_CIDR}",
                f"--node-ip={loop}",
                f"--server-address={loop}:{p['kwok']}",
                # Nodes report kwok's port as their kubelet's, where metrics-server scrapes.
                f"--node-port={p['kwok']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                "--node-lease-duration-seconds=40",
                # Logs objects name each simulated container's log file (wharf.lab.podlogs).
                "--enable-crds=Logs,ClusterLogs",
            ]
        if component == "provisioner":
            run = "import sys; from wharf.lab.provisioner import main; main(sys.argv[1])"
            return [sys.executable, "-c", run, str(d)]
        if component == "pod-logs":
            run = "import sys; from wharf.lab.podlogs import main; main(sys.argv[1])"
            return [sys.executable, "-c", run, str(d)]
        if component == "metrics-server":
            kubeconfig = d / "metrics-server.kubeconfig"
            return [
                str(b.path("metrics-server")),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={loop}",
                f"--secure-port={p['metrics-server']}",
                f"--tls-cert-file={pki / 'metrics-server-serving.crt'}",
                f"--tls-private-key-file={pki / 'metrics-server-serving.key'}",
                f"--cert-dir={pki / 'metrics-server'}",
                "--kubelet-preferred-address-types=InternalIP",
                "--kubelet-use-node-status-port",
                # kwok serves the "kubelets" with the apiserver's certificate (SAN 127.0.0.1).
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                "--kubelet-request-timeout=5s",
                "--metric-resolution=10s",  # its minimum
            ]
        raise ValueError(component)

    # -- processes --------------------------------------------------------------------------
    def start(self, component: str) -> None:
        env = None
        if self.profile["compact"] and component in COMPACT_MEMORY:
            # Go's collector works harder rather than let the heap double (its default).
            env = {**os.environ, "GOMEMLIMIT": COMPACT_MEMORY[component]}
        with self.log_file(component).open("ab") as log:
            proc = subprocess.Popen(
                self.command(component),
                cwd=self.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the command that started it
            )
        self.pid_file(component).write(proc.pid)

    def running(self) -> dict[str, int | None]:
        return {c: self.pid_file(c).running_pid() for c in self.components}

    def memory_mib(self) -> float:
        """The memory of this cluster's running processes, in MiB: their proportional set
        size, so the pages of a binary that 30 API servers share count once, not 30 times."""
        total = 0
        for pid in self.running().values():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        return total / 1024

    def stop(self, timeout: float = 15.0) -> list[str]:
        """Stop every process this cluster's pid files name; return the ones that were running."""
        stopped = []
        for component in reversed(COMPONENTS):
            pid_file = self.pid_file(component)
            pid = pid_file.running_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while pid_file.running_pid() is not None and time.monotonic() < deadline:
                    time.sleep(0.05)
                if pid_file.running_pid() is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    while pid_file.running_pid() is not None:
                        time.sleep(0.05)
                stopped.append(component)
            pid_file.path.unlink(missing_ok=True)
        return stopped

    def log_tail(self, component: str, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_file(component).read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check_alive(self, component: str) -> None:
        if self.pid_file(component).running_pid() is None:
            raise LabError(
                f"{self.name}: {component} exited; last lines of {self.log_file(component)}:\n"
                + self.log_tail(component)
            )

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        ctx.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        return ctx

    def http(self, timeout: float = 5.0) -> httpx.Client:
        """An admin HTTP client to the apiserver, for health checks (and with SETUP_TIMEOUT,
        for the lab's own set-up writes)."""
        return httpx.Client(base_url=self.server, verify=self.ssl_context(), timeout=timeout)

    def healthy(self) -> bool:
        try:
            with self.http() as client:
                return client.get("/readyz").status_code == 200
        except (httpx.HTTPError, OSError):
            return False


def _wait(what: str, check: Callable[[], bool], timeout: float, alive: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        alive()
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def _check_alive(cluster: LabCluster, components: tuple[str, ...]) -> None:
    for component in components:
        cluster.check_alive(component)


def _etcd_healthy(cluster: LabCluster) -> bool:
    url = f"http://127.0.0.1:{cluster.ports['etcd']}/health"
    return bool(httpx.get(url, timeout=2.0).json().get("health") == "true")


def _register_nodes(cluster: LabCluster, nodes: int) -> None:
    with cluster.http(SETUP_TIMEOUT) as client:
        for i in range(1, nodes + 1):
            name = f"{cluster.name}-node-{i}"
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {
                        KWOK_NODE_ANNOTATION: "fake",
                        METRICS_PATH_ANNOTATION: f"/metrics/nodes/{name}/metrics/resource",
                    },
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "topology.kubernetes.io/zone": f"{cluster.name}-zone-{1 + i % 2}",
                        "type": "kwok",
                    },
                },
                "status": {
                    "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                    "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                },
            }
            response = client.post("/api/v1/nodes", json=node)
            if response.status_code not in (201, 409):
                raise LabError(f"{cluster.name}: creating node {name}: {response.text}")


def metrics_api_objects(cluster: LabCluster) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object) that register metrics-server as the `metrics.k8s.io` API: an
    ExternalName Service for the loopback address it listens on, and the APIService naming it."""
    namespace, name = METRICS_SERVICE
    port = cluster.ports["metrics-server"]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "type": "ExternalName",
            "externalName": "127.0.0.1",
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        },
    }
    api_service = {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": "v1beta1.metrics.k8s.io"},
        "spec": {
            "group": "metrics.k8s.io",
            "version": "v1beta1",
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
            "service": {"name": name, "namespace": namespace, "port": port},
            "caBundle": _encode(cluster.pki_dir / "ca.crt"),
        },
    }
    return [
        (f"/api/v1/namespaces/{namespace}/services", service),
        ("/apis/apiregistration.k8s.io/v1/apiservices", api_service),
    ]


def _register_metrics_api(cluster: LabCluster) -> bool:
    """Create metrics-server's Service and APIService; False until kube-system exists."""
    with cluster.http(SETUP_TIMEOUT) as client:
        for path, obj in metrics_api_objects(cluster):
            response = client.post(path, json=obj)
            if response.status_code == 404:
                return False  # kube-system is made by the apiserver shortly after it starts
            if response.status_code not in (201, 409):
                raise LabError(f"{cluster.name}: registering metrics-server: {response.text}")
    return True


def _nodes_ready(cluster: LabCluster) -> int:
    with cluster.http() as client:
        items = client.get("/api/v1/nodes").json().get("items", [])
    return sum(
        1
        for node in items
        for cond in node.get("status", {}).get("conditions", [])
        if cond["type"] == "Ready" and cond["status"] == "True"
    )


def _default_service_account(cluster: LabCluster) -> bool:
    with cluster.http() as client:
        return client.get("/api/v1/namespaces/default/serviceaccounts/default").is_success


class Lab:
    """A set of lab clusters under one directory, with a merged kubeconfig."""

    def __init__(self, directory: Path | None = None, binaries: LabBinaries | None = None) -> None:
        self.directory = directory or default_lab_dir()
        self._binaries = binaries

    @property
    def binaries(self) -> LabBinaries:
        if self._binaries is None:
            self._binaries = find_binaries()
            if self._binaries is None:
                raise LabError("the lab binaries are not built yet: run `wharf lab build` first")
        return self._binaries

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def spec_file(self) -> Path:
        return self.directory / "lab.json"

    def clusters(self) -> list[LabCluster]:
        try:
            names = json.loads(self.spec_file.read_text())["clusters"]
        except (OSError, ValueError):
            return []
        return [self._cluster(name) for name in names]

    def _cluster(self, name: str) -> LabCluster:
        cluster = LabCluster(self.directory / "clusters" / name)
        cluster._binaries = self.binaries
        return cluster

    def cluster(self, name: str) -> LabCluster:
        for cluster in self.clusters():
            if cluster.name == name:
                return cluster
        raise LabError(f"no lab cluster named {name!r} in {self.directory}")

    def is_up(self) -> bool:
        clusters = self.clusters()
        return bool(clusters) and all(
            all(pid is not None for pid in c.running().values()) and c.healthy() for c in clusters
        )

    def up(
        self,
        clusters: int = 2,
        nodes: int = 3,
        progress: Progress = print,
        timeout: float = 180.0,
        crd_bundles: Sequence[str] = crds.DEFAULT_BUNDLES,
        compact: bool = False,
    ) -> list[LabCluster]:
        """Bring up `clusters` clusters of `nodes` simulated nodes each, with the CRDs of
        `crd_bundles` installed; reuse a healthy lab. `compact`: fewer processes per cluster
        and one shared etcd, for labs of many clusters."""
        if clusters < 1 or nodes < 1:
            raise LabError("a lab needs at least one cluster and one node")
        if clusters > (MAX_COMPACT_CLUSTERS if compact else MAX_CLUSTERS):
            raise LabError(
                f"at most {MAX_COMPACT_CLUSTERS} compact clusters"
                if compact
                else f"at most {MAX_CLUSTERS} full clusters; a compact lab (--compact) takes up "
                f"to {MAX_COMPACT_CLUSTERS}"
            )
        try:
            crd_files = [f for b in crds.bundles(crd_bundles) for f in crds.fetch(b, progress)]
            kwok_files = crds.fetch(crds.KWOK_LOGS, progress)
        except crds.CrdBundleError as exc:
            raise LabError(str(exc)) from exc
        spec = {
            "clusters": [f"lab{i}" for i in range(1, clusters + 1)],
            "nodes": nodes,
            "crdBundles": list(crd_bundles),
            **({"compact": True} if compact else {}),
        }
        previous = self._read_spec()
        wanted = {**spec, "kubernetes_version": self.binaries.kubernetes_version}
        if previous == wanted and self.is_up():
            progress(f"lab already up in {self.directory}")
            return self.clusters()
        stale = self.down(progress=lambda _: None)
        if stale:
            progress(f"stopped {len(stale)} stale process(es) left from an earlier run")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.spec_file.write_text(json.dumps(wanted, indent=2))
        members = self.clusters()
        started = time.monotonic()

        def wait_all(what: str, check: Callable[[LabCluster], bool], *components: str) -> None:
            for c in members:
                if components and not set(components) & set(c.components):
                    continue  # a compact cluster without the shared etcd, say
                _wait(
                    f"{c.name} {what}",
                    partial(check, c),
                    timeout,
                    partial(_check_alive, c, components or c.components),
                )

        try:
            shared_etcd = None
            for cluster in members:
                # A fresh etcd each time: a lab is scratch state, and old data with new
                # certificates or ports only confuses.
                shutil.rmtree(cluster.directory / "etcd-data", ignore_errors=True)
                cluster.prepare(compact, shared_etcd)
                if compact:
                    shared_etcd = cluster.etcd_url
            self._write_merged_kubeconfig(members)
            self._start_phase(members, ["etcd"], progress)
            wait_all("etcd", _etcd_healthy, "etcd")
            self._start_phase(members, ["kube-apiserver"], progress)
            wait_all("kube-apiserver /readyz", LabCluster.healthy, "kube-apiserver")
            # kwok watches its Logs kinds from its start: they must be served before it is.
            self._install_crds(members, kwok_files, lambda _: None)
            # The API servers take in the CRDs while the rest of the cluster comes up.
            with ThreadPoolExecutor(1) as background:
                installed = background.submit(self._install_crds, members, crd_files, progress)
                for c in members:
                    with c.http(SETUP_TIMEOUT) as client:
                        provisioner.install_classes(client)
                self._start_phase(
                    members,
                    [
                        "kube-controller-manager",
                        "kube-scheduler",
                        "kwok",
                        "provisioner",
                        "pod-logs",
                        "metrics-server",
                    ],
                    progress,
                )
                for c in members:
                    _register_nodes(c, nodes)
                progress(f"waiting for {nodes} Ready node(s) per cluster")
                wait_all("nodes Ready", lambda c: _nodes_ready(c) >= nodes)
                wait_all("default service account", _default_service_account)
                # Registered, not awaited: its first figures come a scrape or two later, and
                # nothing at start-up needs them.
                wait_all(
                    "metrics.k8s.io registered",
                    lambda c: "metrics-server" not in c.components or _register_metrics_api(c),
                )
                installed.result()
        except BaseException:
            self.down(progress=lambda _: None)
            raise
        progress(f"lab up: {len(members)} cluster(s) in {time.monotonic() - started:.1f}s")
        return members

    @staticmethod
    def _install_crds(members: list[LabCluster], files: list[Path], progress: Progress) -> None:
        """The CRD bundles in every cluster at once (the API servers take them in parallel)."""
        if not files:
            return

        def install(cluster: LabCluster) -> list[str]:
            with cluster.http(timeout=120.0) as client:
                try:
                    return crds.install(client, files)
                except crds.CrdBundleError as exc:
                    raise LabError(f"{cluster.name}: {exc}") from exc

        with ThreadPoolExecutor(len(members)) as pool:
            names = list(pool.map(install, members))
        progress(f"installed {len(names[0])} CRD(s) in {len(members)} cluster(s)")

    def _read_spec(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.spec_file.read_text())
            return data
        except (OSError, ValueError):
            return None

    @staticmethod
    def _start_phase(members: list[LabCluster], components: list[str], progress: Progress) -> None:
        for component in components:
            for cluster in members:
                if component in cluster.components:
                    cluster.start(component)
        progress(f"started {', '.join(components)} in {len(members)} cluster(s)")

    def _write_merged_kubeconfig(self, members: list[LabCluster]) -> None:
        entries = [
            (
                c.name,
                c.server,
                c.pki_dir / "ca.crt",
                KeyPair(c.pki_dir / "admin.crt", c.pki_dir / "admin.key"),
            )
            for c in members
        ]
        _write_yaml(self.kubeconfig, kubeconfig_dict(entries))

    def down(self, progress: Progress = print) -> list[str]:
        """Stop every process the pid files name, in every cluster directory found."""
        stopped: list[str] = []
        root = self.directory / "clusters"
        directories = sorted(root.iterdir()) if root.is_dir() else []
        # A compact lab's API servers stop before the etcd they share.
        directories.sort(key=lambda d: LabCluster(d).pid_file("etcd").running_pid() is not None)
        for directory in directories:
            cluster = LabCluster(directory)
            names = cluster.stop()
            stopped += [f"{cluster.name}/{n}" for n in names]
        progress(f"stopped {len(stopped)} process(es)" if stopped else "nothing was running")
        return stopped

    def status(self) -> list[dict[str, Any]]:
        rows = []
        for cluster in self.clusters():
            running = cluster.running()
            up = all(pid is not None for pid in running.values())
            rows.append(
                {
                    "cluster": cluster.name,
                    "server": cluster.server if (cluster.directory / "ports.json").exists() else "",
                    "healthy": up and cluster.healthy(),
                    "nodes_ready": _nodes_ready(cluster) if up and cluster.healthy() else 0,
                    "processes": running,
                    "memoryMiB": round(cluster.memory_mib()),
                }
            )
        return rows

    @contextlib.contextmanager
    def running(self, clusters: int = 2, nodes: int = 3) -> Iterator[list[LabCluster]]:
        members = self.up(clusters=clusters, nodes=nodes, progress=lambda _: None)
        try:
            yield members
        finally:
            self.down(progress=lambda _: None)
