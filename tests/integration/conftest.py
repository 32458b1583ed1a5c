"""A whole Wharf server (API + controllers) per test, on SQLite and on PostgreSQL, with the lab's
two clusters registered. Tenants get unique names, so tests never see each other's objects.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from wharf.core.config import Settings
from wharf.lab import Lab, LabCluster
from wharf.lab.lab import _free_ports
from wharf.lab.prometheus import Prometheus, wharf_feed
from wharf.server import create_app

ADMIN_PASSWORD = "admin-password-1"
WHARF_USER = "wharf"  # the identity Wharf uses in the lab clusters (counted in their audit logs)


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.25)


def manifest(obj: dict[str, Any]) -> dict[str, Any]:
    """What `wharf apply` would send for an object read back: no resourceVersion, so the
    write is not refused because a controller updated the status in between."""
    meta = {
        k: v for k, v in obj["metadata"].items() if k in ("name", "tenant", "labels", "annotations")
    }
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": meta,
        "spec": obj["spec"],
    }


@dataclass
class Api:
    """A caller of the REST API with one token."""

    client: TestClient
    token: str = ""
    user: str = ""

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        sent = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return self.client.request(method, path, headers={**sent, **(headers or {})}, **kwargs)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def put(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.request("PUT", path, json=body)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)

    def ok(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        response = self.request(method, path, **kw)
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        result: dict[str, Any] = response.json()
        return result


@dataclass
class Wharf:
    app: FastAPI
    client: TestClient
    admin: Api
    lab: Lab
    names: list[str] = field(default_factory=list)

    @property
    def platform(self) -> Any:
        return self.app.state.platform

    def login(self, user: str, password: str) -> Api:
        answer = self.client.post("/api/v1/login", json={"username": user, "password": password})
        assert answer.status_code == 200, answer.text
        return Api(self.client, answer.json()["token"], user)

    def user(self, name: str | None = None) -> Api:
        """A new local user, logged in."""
        name = name or f"u{uuid.uuid4().hex[:8]}"
        self.admin.ok("POST", "/api/v1/users", json={"name": name, "password": "password-123"})
        return self.login(name, "password-123")

    def tenant(
        self,
        quota: dict[str, str],
        admins: list[str] = (),  # type: ignore[assignment]
        name: str = "",
        **spec: Any,
    ) -> str:
        name = name or f"t{uuid.uuid4().hex[:8]}"
        body = {
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {"quota": quota, "admins": list(admins), "clusters": ["lab1", "lab2"], **spec},
        }
        self.admin.ok("PUT", f"/api/v1/tenants/{name}", json=body)
        return name

    def project(
        self,
        tenant: str,
        name: str,
        quota: dict[str, str],
        api: Api | None = None,
        members: list[dict[str, str]] = (),
        envs: list[dict[str, Any]] | None = None,  # type: ignore[assignment]
    ) -> dict[str, Any]:
        body = {
            "kind": "Project",
            "metadata": {"name": name},
            "spec": {
                "quota": quota,
                "members": list(members),
                "environments": envs or [{"name": "dev", "clusters": ["lab1", "lab2"]}],
            },
        }
        return (api or self.admin).ok("PUT", f"/api/v1/tenants/{tenant}/projects/{name}", json=body)

    def wait_placed(self, tenant: str, project: str, api: Api | None = None) -> dict[str, Any]:
        path = f"/api/v1/tenants/{tenant}/projects/{project}"

        def placed() -> dict[str, Any] | None:
            obj = (api or self.admin).ok("GET", path)
            generation = obj["metadata"]["generation"]
            status = obj["status"]
            if status.get("phase") == "Ready" and status.get("observedGeneration") == generation:
                return obj
            return None

        return wait_for(placed, what=f"project {tenant}/{project} placed")  # type: ignore[no-any-return]


def register_clusters(admin: Api, lab: Lab) -> None:
    for cluster in lab.clusters():
        kubeconfig = cluster.user_kubeconfig(WHARF_USER, ("system:masters",)).read_text()
        body = {
            "kind": "Cluster",
            "metadata": {"name": cluster.name, "labels": {"env": "lab"}},
            "spec": {"kubeconfig": kubeconfig},
        }
        admin.ok("PUT", f"/api/v1/clusters/{cluster.name}", json=body)

    def ready() -> bool:
        items = admin.ok("GET", "/api/v1/clusters")["items"]
        return len(items) == 2 and all(
            c["status"].get("phase") == "Ready" and c["status"].get("capacity") for c in items
        )

    wait_for(ready, what="both clusters Ready with capacity")


@pytest.fixture
def wharf_settings() -> dict[str, Any]:
    """More settings for the `wharf` fixture; a module overrides it (Prometheus's URL)."""
    return {}


@pytest.fixture
def wharf(lab: Lab, database_url: str, wharf_settings: dict[str, Any]) -> Iterator[Wharf]:
    settings = Settings(
        database_url=database_url,
        admin_password=ADMIN_PASSWORD,
        secret_key="integration-test-key",
        allow_loopback_clusters=True,  # the lab's clusters listen on loopback
        heartbeat_seconds=1.0,
        resync_seconds=5.0,
        **wharf_settings,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        answer = client.post(
            "/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        admin = Api(client, answer.json()["token"], "admin")
        register_clusters(admin, lab)
        yield Wharf(app, client, admin, lab)


def cluster_writes(cluster: LabCluster, namespace: str) -> list[dict[str, Any]]:
    """Writes Wharf made to one namespace (and to that Namespace object) in a cluster."""
    return [
        e
        for e in cluster.writes_by(WHARF_USER)
        if e.get("objectRef", {}).get("namespace") == namespace
        or (
            e.get("objectRef", {}).get("resource") == "namespaces"
            and e.get("objectRef", {}).get("name") == namespace
        )
    ]


class ServerProcess:
    """A real `wharf server` process on a free loopback port, for the tests that need one
    (the CLI, the browser, killing it mid-reconcile)."""

    def __init__(self, workdir: Path, database_url: str | None = None, **env: str) -> None:
        # Below the ephemeral range (as the lab's): with test files running side by side, a
        # port the kernel handed out for port 0 may go to another worker's connection.
        self.port = _free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.env = {
            **os.environ,
            "WHARF_DATABASE_URL": database_url or f"sqlite:///{workdir / 'wharf.db'}",
            "WHARF_PORT": str(self.port),
            "WHARF_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "WHARF_SECRET_KEY": "integration-test-key",
            "WHARF_ALLOW_LOOPBACK_CLUSTERS": "true",
            "WHARF_HEARTBEAT_SECONDS": "1",
            "WHARF_RESYNC_SECONDS": "5",
            "WHARF_LOG_FORMAT": "console",
            # Restarted, it is the same replica (as a container restarted in its pod): it
            # renews its own leases at once instead of waiting for them to expire.
            "WHARF_REPLICA": f"server-{self.port}",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def _ready(self) -> bool:
        # Ours, not whatever else answers on the port: our process must still be running.
        if self.proc is not None and self.proc.poll() is not None:
            log = (self.workdir / "server.log").read_text()[-2000:]
            raise AssertionError(f"wharf server exited ({self.proc.returncode}):\n{log}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def launch(self) -> None:
        """Start the process without waiting for it (several start side by side)."""
        with (self.workdir / "server.log").open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "wharf", "server"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 120) -> None:
        # Generous: on a shared, loaded machine a cold start of the interpreter can be slow.
        wait_for(self._ready, timeout=timeout, what="wharf server ready")

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def login(self) -> Api:
        answer = httpx.post(
            f"{self.url}/api/v1/login",
            json={"username": "admin", "password": ADMIN_PASSWORD},
            timeout=30,  # a loaded machine (several replicas, labs) answers slowly
        )
        answer.raise_for_status()
        client = httpx.Client(base_url=self.url, timeout=30)
        return Api(client, answer.json()["token"], "admin")  # type: ignore[arg-type]

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class RegistryProcess:
    """A real CNCF distribution registry (Debian's docker-registry) on a free loopback port,
    configured for token auth against a Wharf server: the `auth` and `notifications` sections
    come from Wharf's own `GET /api/v1/registries/<name>/config`."""

    BINARY = "/usr/bin/docker-registry"

    def __init__(self, workdir: Path, name: str) -> None:
        self.port = _free_ports(1)[0]  # below the ephemeral range, as ServerProcess's
        self.name = name
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def configure(self, wharf_config: dict[str, Any], bundle: str) -> None:
        import yaml

        (self.workdir / "bundle.pem").write_text(bundle)
        auth = wharf_config["auth"]
        auth["token"]["rootcertbundle"] = str(self.workdir / "bundle.pem")
        config = {
            "version": 0.1,
            "log": {"level": "info"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.workdir / "data")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host, "secret": uuid.uuid4().hex},
            "auth": auth,
            "notifications": wharf_config["notifications"],
        }
        (self.workdir / "config.yml").write_text(yaml.safe_dump(config))

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v2/", timeout=2).status_code == 401
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        with (self.workdir / "registry.log").open("a") as log:
            self.proc = subprocess.Popen(
                [self.BINARY, "serve", str(self.workdir / "config.yml")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._ready, timeout=60, what=f"registry {self.name} ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def oci_layout(path: Path, content: bytes) -> Path:
    """A one-layer OCI image layout (skopeo's `oci:` transport) whose single file holds
    `content`: different content, a different image."""
    import gzip
    import hashlib
    import io
    import json
    import tarfile

    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes, media_type: str) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    layer = gzip.compress(tar.getvalue(), mtime=0)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {
            "type": "layers",
            "diff_ids": [f"sha256:{hashlib.sha256(tar.getvalue()).hexdigest()}"],
        },
        "config": {},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": [blob(layer, "application/vnd.oci.image.layer.v1.tar+gzip")],
    }
    entry = blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    entry["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return path


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    """Run skopeo (Debian's) with a bounded wait; the caller checks returncode."""
    return subprocess.run(
        ["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="session")
def cosign() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run cosign, built from its Go module into the lab cache (the first run builds it: CI
    starts from a fresh clone, the cache of earlier builds not guaranteed)."""
    from wharf.lab.build import BuildError, build_tool

    try:
        binary = str(build_tool("cosign", progress=lambda _: None))
    except BuildError as exc:
        pytest.fail(f"cosign did not build: {exc}")

    def run(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        # Signing with a key, offline: no transparency log, no Sigstore TUF root.
        environ = {**os.environ, "COSIGN_YES": "true", **env}
        return subprocess.run(
            [binary, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=environ
        )

    return run


@dataclass
class Monitored:
    """A real server whose workload feed a real Prometheus scrapes (every second), and which
    queries that Prometheus: for the monitoring, charts and alert tests."""

    wharf: Wharf
    server: ServerProcess
    prometheus: Prometheus
    token: str  # the server's WHARF_METRICS_TOKEN

    def series(self, promql: str) -> list[dict[str, Any]]:
        return self.prometheus.query(promql)


@pytest.fixture(scope="module")
def monitored(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    workdir = tmp_path_factory.mktemp("monitored")
    token = uuid.uuid4().hex
    server = ServerProcess(workdir, None, WHARF_METRICS_TOKEN=token, WHARF_LOG_LEVEL="warning")
    # Every 2 s (the scrape's timeout is its interval): a loaded machine's scrape takes over 1 s.
    prometheus = Prometheus(workdir / "prometheus", [], "2s", [wharf_feed(server.url, token)])
    prometheus.start()
    server.env["WHARF_PROMETHEUS_URL"] = prometheus.url
    try:
        server.launch()
        server.wait_ready(timeout=300)  # a loaded machine starts an interpreter slowly
        admin = server.login()
        register_clusters(admin, lab)
        wharf = Wharf(None, admin.client, admin, lab)  # type: ignore[arg-type]
        yield Monitored(wharf, server, prometheus, token)
    finally:
        server.stop()
        prometheus.stop()
