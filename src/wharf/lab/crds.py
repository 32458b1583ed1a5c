"""CRD bundles: CustomResourceDefinitions the lab installs into its clusters.

Each bundle is the CRD YAML of a published Go module at a pinned version, fetched once through
the Go module proxy (`go mod download`) and cached beside the lab's binaries
(`<cache>/crds/<bundle>-<version>/`). No controller of theirs runs: the lab's API servers only
need to know the kinds, so that what Wharf writes (HTTPRoutes, cert-manager Certificates) is
validated by a real API server against the projects' own schemas.

This is the one place where bundles are named; another capability adds its own here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

Progress = Callable[[str], None]


class CrdBundleError(Exception):
    """A bundle could not be fetched or installed; the message says which and why."""


@dataclass(frozen=True)
class CrdBundle:
    """The CRDs of one Go module: these files of its `directory`."""

    name: str
    module: str
    version: str
    directory: str
    files: tuple[str, ...]

    @property
    def cache_name(self) -> str:
        return f"{self.name}-{self.version}"


# Only the kinds Wharf writes or points at: every CRD costs the API server seconds to take
# in, and the lab should start fast (the other routes and ACME's orders are left out).
GATEWAY_API = CrdBundle(
    "gateway-api",
    "sigs.k8s.io/gateway-api",
    "v1.6.3",
    "config/crd/standard",
    tuple(
        f"gateway.networking.k8s.io_{kind}.yaml"
        for kind in ("gatewayclasses", "gateways", "httproutes", "referencegrants")
    ),
)
CERT_MANAGER = CrdBundle(
    "cert-manager",
    "github.com/cert-manager/cert-manager",
    "v1.21.2",
    "deploy/crds",
    tuple(
        f"cert-manager.io_{kind}.yaml"
        for kind in ("certificates", "certificaterequests", "issuers", "clusterissuers")
    ),
)
BUNDLES = {b.name: b for b in (GATEWAY_API, CERT_MANAGER)}
# kwok's log simulation, part of every lab (not a choice): kwok reads these kinds at its start.
KWOK_LOGS = CrdBundle(
    "kwok-logs",
    "sigs.k8s.io/kwok",
    "v0.8.0",
    "kustomize/crd/bases",
    ("kwok.x-k8s.io_logs.yaml", "kwok.x-k8s.io_clusterlogs.yaml"),
)
# What `wharf lab up` installs unless told otherwise (the tests' lab too).
DEFAULT_BUNDLES = tuple(BUNDLES)


def _cache_root() -> Path:
    from wharf.lab.build import cache_root

    return cache_root() / "crds"


def _module_dir(bundle: CrdBundle) -> Path:
    """The module's files, from the Go module cache (downloaded through the proxy if new)."""
    if shutil.which("go") is None:
        raise CrdBundleError(f"{bundle.name}: fetching {bundle.module} needs `go` on PATH")
    with tempfile.TemporaryDirectory() as scratch:  # outside any go.mod
        out = subprocess.run(
            ["go", "mod", "download", "-json", f"{bundle.module}@{bundle.version}"],
            cwd=scratch,
            env={**os.environ, "GOFLAGS": "-mod=mod"},
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
    try:
        info = json.loads(out.stdout)
    except ValueError:
        info = {"Error": out.stderr.strip()}
    if out.returncode != 0 or "Error" in info:
        raise CrdBundleError(
            f"{bundle.name}: go mod download {bundle.module}@{bundle.version}: "
            f"{info.get('Error') or out.stderr.strip()}"
        )
    return Path(info["Dir"])


def _definitions(path: Path) -> list[dict[str, object]]:
    return [
        doc
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"
    ]


def fetch(bundle: CrdBundle, progress: Progress = print) -> list[Path]:
    """The bundle's CRD files in the cache, fetched first when they are not there yet."""
    target = _cache_root() / bundle.cache_name
    if target.is_dir():
        return sorted(target.glob("*.yaml"))
    progress(f"crd bundle {bundle.name}: fetching {bundle.module}@{bundle.version}")
    source = _module_dir(bundle) / bundle.directory
    files = [source / name for name in bundle.files]
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise CrdBundleError(f"{bundle.name}: {bundle.directory} has no {', '.join(missing)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{bundle.cache_name}-"))
    for path in files:
        definitions = _definitions(path)
        if definitions:
            (staging / path.name).write_text(yaml.safe_dump_all(definitions))
    try:
        staging.rename(target)  # whole or not at all, also when two labs fetch at once
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(target.glob("*.yaml"))


def _established(crd: dict[str, object]) -> bool:
    status = crd.get("status")
    # A CRD just created may answer `conditions: null` before the API server fills it in.
    conditions = (status.get("conditions") if isinstance(status, dict) else None) or []
    return any(
        isinstance(c, dict) and c.get("type") == "Established" and c.get("status") == "True"
        for c in conditions
    )


def install(http: httpx.Client, files: Sequence[Path], timeout: float = 60.0) -> list[str]:
    """Server-side apply every CRD of the files (field manager `wharf-lab`), then wait until
    the API server serves each of them; return their names."""
    names = []
    for path in files:
        for crd in _definitions(path):
            name = str(crd["metadata"]["name"])  # type: ignore[index]
            response = http.patch(
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
                content=json.dumps(crd),
                headers={"Content-Type": "application/apply-patch+yaml"},
                params={"fieldManager": "wharf-lab", "force": "true"},
            )
            if response.status_code >= 400:
                raise CrdBundleError(f"installing CRD {name}: {response.text[:500]}")
            names.append(name)
    deadline = time.monotonic() + timeout
    for name in names:
        url = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        while not _established(http.get(url).json()):
            if time.monotonic() > deadline:
                raise CrdBundleError(f"CRD {name} not Established after {timeout:.0f}s")
            time.sleep(0.1)
    return names


def bundles(names: Sequence[str]) -> list[CrdBundle]:
    """The bundles named; an unknown name is an error naming the known ones."""
    unknown = [n for n in names if n not in BUNDLES]
    if unknown:
        raise CrdBundleError(
            f"unknown CRD bundle(s) {', '.join(unknown)} (known: {', '.join(BUNDLES)})"
        )
    return [BUNDLES[n] for n in names]
