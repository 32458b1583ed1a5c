"""Build the lab's binaries from the Go module proxy into a cache outside the repository.

Kubernetes does not publish its commands as standalone modules: `k8s.io/kubernetes` requires
its staging modules at `v0.0.0` and replaces them with `./staging/...` paths that only exist in
its own source tree. A generated wrapper module therefore requires `k8s.io/kubernetes` and
replaces each of those staging modules with the published `v0.X.Y` of the same release.
etcd gets a wrapper `main` that calls `etcdmain.Main`; kwok and metrics-server build from
their own modules. Tools the tests use beside the clusters (cosign, to sign images) build from
their own modules into `tools/<name>-<version>/`, independent of the Kubernetes release.

The versions are pinned. Where a Kubernetes release does not build, the next older line is
tried, and the one used is recorded in `build.json` beside the binaries.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from wharf.core.paths import cache_home

# Newest first: the first that builds is used.
KUBERNETES_VERSIONS = ("v1.37.2", "v1.36.3", "v1.35.4", "v1.34.4")
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
METRICS_SERVER_VERSION = "v0.9.0"

# Go-built tools beside the clusters: name -> (module path of the command, pinned version).
TOOLS = {"cosign": ("github.com/sigstore/cosign/v2/cmd/cosign", "v2.6.5")}
# Helm is not a lab binary: only the chart's tests need it (see `build_helm`).
HELM_VERSION = "v3.22.0"
# Loki was the first choice for log search; its cold build (over an hour on 2 cores) does not
# fit a cold CI run, so log search uses VictoriaLogs (docs/observability-logs.md).
LOKI_VERSION = "v3.7.8"
LOKI_COMMAND = "github.com/grafana/loki/v3/cmd/loki"

# The log store and its collector (docs/observability-logs.md), one module, both commands.
VICTORIALOGS_VERSION = "v1.52.2"
VICTORIALOGS_MODULE = "github.com/VictoriaMetrics/VictoriaLogs"
VICTORIALOGS_COMMANDS = ("victoria-logs", "vlagent")

KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
ALL_BINARIES = (*KUBERNETES_COMMANDS, "etcd", "kwok", "metrics-server")

# The kwok Stage definitions that make simulated nodes Ready and pods Running.
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)

# kwok's resource-usage simulation: a Metric serving kubelet's /metrics/resource per node, and a
# ClusterResourceUsage giving every pod the CPU and memory its annotations say.
KWOK_METRICS = (
    "kustomize/metrics/resource/metrics-resource.yaml",
    "kustomize/metrics/usage/usage-from-annotation.yaml",
)

Progress = Callable[[str], None]


class BuildError(Exception):
    """A lab binary could not be built; the message names the module and the Go error."""


@dataclass(frozen=True)
class LabBinaries:
    """A complete set of built lab binaries."""

    root: Path
    kubernetes_version: str
    etcd_version: str
    kwok_version: str

    def path(self, name: str) -> Path:
        return self.root / "bin" / name

    @property
    def stages(self) -> list[Path]:
        return sorted((self.root / "stages").glob("*.yaml"))

    @property
    def kwok_metrics(self) -> list[Path]:
        return [self.root / "kwok-metrics" / Path(m).name for m in KWOK_METRICS]


@dataclass
class BuildResult:
    binaries: LabBinaries
    seconds: float
    peak_rss_mib: float
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed_versions: dict[str, str] = field(default_factory=dict)


def cache_root() -> Path:
    return Path(os.environ.get("WHARF_LAB_CACHE") or cache_home() / "lab")


def find_binaries(root: Path | None = None) -> LabBinaries | None:
    """The binaries of the last complete build, or None when nothing is built yet."""
    root = root or cache_root()
    try:
        current = json.loads((root / "current.json").read_text())
    except (OSError, ValueError):
        return None
    version_dir = root / current["kubernetes_version"]
    binaries = LabBinaries(
        root=version_dir,
        kubernetes_version=current["kubernetes_version"],
        etcd_version=current["etcd_version"],
        kwok_version=current["kwok_version"],
    )
    found = all(binaries.path(name).is_file() for name in ALL_BINARIES)
    if found and binaries.stages and all(p.is_file() for p in binaries.kwok_metrics):
        return binaries
    return None


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-buildvcs=false")
    env.setdefault("CGO_ENABLED", "0")
    return env


def _run(
    args: Sequence[str], cwd: Path, progress: Progress, what: str, count_packages: bool = False
) -> None:
    """Run a go command, streaming a short progress line now and then; raise with its tail."""
    started = time.monotonic()
    proc = subprocess.Popen(
        list(args),
        cwd=cwd,
        env=_go_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    tail: list[str] = []
    packages = 0
    last_report = started
    for line in proc.stdout:
        tail = [*tail[-40:], line.rstrip()]
        if count_packages and not line.startswith(("go: ", "#")):
            packages += 1
        now = time.monotonic()
        if now - last_report >= 30:
            last_report = now
            done = f", {packages} packages compiled" if count_packages else ""
            progress(f"  {what}: {now - started:.0f}s{done}")
    if proc.wait() != 0:
        raise BuildError(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def _module_dir(module: str, version: str, cwd: Path, progress: Progress) -> Path:
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        cwd=cwd,
        env=_go_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        info = json.loads(out.stdout)
    except ValueError as exc:
        raise BuildError(f"go mod download {module}@{version}: {out.stderr.strip()}") from exc
    if out.returncode != 0 or "Error" in info:
        raise BuildError(f"go mod download {module}@{version}: {info.get('Error', out.stderr)}")
    return Path(info["Dir"])


def staging_replacements(kubernetes_go_mod: str, kubernetes_version: str) -> dict[str, str]:
    """Map each staging module that k8s.io/kubernetes requires at v0.0.0 to its release."""
    published = "v0." + kubernetes_version.removeprefix("v1.")
    staged = set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", kubernetes_go_mod, re.M))
    required = set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+v0\.0\.0\b", kubernetes_go_mod, re.M))
    return {module: published for module in sorted(staged & required)}


def _kubernetes_ldflags(version: str) -> str:
    major, minor, _ = version.removeprefix("v").split(".", 2)
    stamps = {
        "k8s.io/component-base/version.gitVersion": version,
        "k8s.io/component-base/version.gitMajor": major,
        "k8s.io/component-base/version.gitMinor": minor,
        "k8s.io/component-base/version.gitTreeState": "clean",
        "k8s.io/client-go/pkg/version.gitVersion": version,
        "k8s.io/client-go/pkg/version.gitMajor": major,
        "k8s.io/client-go/pkg/version.gitMinor": minor,
    }
    return "-s -w " + " ".join(f"-X {key}={value}" for key, value in stamps.items())


def _build_kubernetes(version: str, root: Path, progress: Progress) -> None:
    src = root / "src" / "kubernetes"
    src.mkdir(parents=True, exist_ok=True)
    bin_dir = root / "bin"
    progress(f"kubernetes {version}: resolving k8s.io/kubernetes and its staging modules")
    module_dir = _module_dir("k8s.io/kubernetes", version, src, progress)
    go_mod = (module_dir / "go.mod").read_text()
    go_line = re.search(r"^go (\S+)", go_mod, re.M)
    lines = [
        "// Generated by `wharf lab build`: builds Kubernetes commands from the module proxy.",
        "module wharf.local/lab/kubernetes",
        "",
        f"go {go_line.group(1) if go_line else '1.24.0'}",
        "",
        f"require k8s.io/kubernetes {version}",
        "",
    ]
    lines += [f"replace {m} => {m} {v}" for m, v in staging_replacements(go_mod, version).items()]
    (src / "go.mod").write_text("\n".join(lines) + "\n")
    imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{cmd}"' for cmd in KUBERNETES_COMMANDS)
    (src / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")
    _run(["go", "mod", "tidy"], src, progress, f"go mod tidy (kubernetes {version})")
    missing = [c for c in KUBERNETES_COMMANDS if not (bin_dir / c).is_file()]
    progress(
        f"kubernetes {version}: compiling {', '.join(missing)} "
        "(a cold build takes about 8 minutes on 2 cores)"
    )
    _run(
        [
            "go",
            "build",
            "-v",
            "-trimpath",
            "-ldflags",
            _kubernetes_ldflags(version),
            "-o",
            str(bin_dir) + "/",
            *(f"k8s.io/kubernetes/cmd/{cmd}" for cmd in missing),
        ],
        src,
        progress,
        f"go build kubernetes {version}",
        count_packages=True,
    )


def _build_etcd(root: Path, progress: Progress) -> str:
    src = root / "src" / "etcd"
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(
        "// Generated by `wharf lab build`.\nmodule wharf.local/lab/etcd\n\ngo 1.26.0\n\n"
        f"require go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n"
    )
    (src / "main.go").write_text(
        "// Command etcd runs etcd's own main from go.etcd.io/etcd/server/v3/etcdmain.\n"
        'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
        "func main() { etcdmain.Main(os.Args) }\n"
    )
    try:
        _run(["go", "mod", "tidy"], src, progress, "go mod tidy (etcd)")
        progress(f"etcd {ETCD_VERSION}: compiling")
        _run(
            ["go", "build", "-v", "-trimpath", "-ldflags", "-s -w", "-o", str(root / "bin/etcd")],
            src,
            progress,
            f"go build etcd {ETCD_VERSION}",
            count_packages=True,
        )
        return ETCD_VERSION
    except BuildError as exc:
        debian = shutil.which("etcd") or "/usr/bin/etcd"
        if not Path(debian).is_file():
            raise BuildError(
                f"{exc}\nThe fallback, Debian's etcd-server, is not installed either: "
                "apt-get install etcd-server"
            ) from exc
        progress(f"etcd {ETCD_VERSION} did not build; using Debian's {debian}")
        shutil.copy2(debian, root / "bin/etcd")
        return "debian"


def _build_kwok(root: Path, progress: Progress) -> None:
    src = root / "src" / "kwok"
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(
        "// Generated by `wharf lab build`.\nmodule wharf.local/lab/kwok\n\ngo 1.26.0\n\n"
        f"require sigs.k8s.io/kwok {KWOK_VERSION}\n"
    )
    (src / "tools.go").write_text(
        '//go:build tools\n\npackage tools\n\nimport _ "sigs.k8s.io/kwok/cmd/kwok"\n'
    )
    _run(["go", "mod", "tidy"], src, progress, "go mod tidy (kwok)")
    if not (root / "bin/kwok").is_file():
        progress(f"kwok {KWOK_VERSION}: compiling")
        _run(
            [
                "go",
                "build",
                "-v",
                "-trimpath",
                "-ldflags",
                "-s -w",
                "-o",
                str(root / "bin/kwok"),
                "sigs.k8s.io/kwok/cmd/kwok",
            ],
            src,
            progress,
            f"go build kwok {KWOK_VERSION}",
            count_packages=True,
        )
    module_dir = _module_dir("sigs.k8s.io/kwok", KWOK_VERSION, src, progress)
    stages = root / "stages"
    stages.mkdir(exist_ok=True)
    for stage in KWOK_STAGES:
        shutil.copyfile(module_dir / stage, stages / Path(stage).name)
    metrics = root / "kwok-metrics"
    metrics.mkdir(exist_ok=True)
    for manifest in KWOK_METRICS:
        shutil.copyfile(module_dir / manifest, metrics / Path(manifest).name)


def _build_metrics_server(root: Path, progress: Progress) -> None:
    """metrics-server, which serves the `metrics.k8s.io` API from kwok's simulated usage."""
    src = root / "src" / "metrics-server"
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(
        "// Generated by `wharf lab build`.\nmodule wharf.local/lab/metrics-server\n\ngo 1.26.4\n\n"
        f"require sigs.k8s.io/metrics-server {METRICS_SERVER_VERSION}\n"
    )
    (src / "tools.go").write_text(
        "//go:build tools\n\npackage tools\n\n"
        'import _ "sigs.k8s.io/metrics-server/cmd/metrics-server"\n'
    )
    _run(["go", "mod", "tidy"], src, progress, "go mod tidy (metrics-server)")
    progress(f"metrics-server {METRICS_SERVER_VERSION}: compiling")
    _run(
        [
            "go",
            "build",
            "-v",
            "-trimpath",
            "-ldflags",
            "-s -w",
            "-o",
            str(root / "bin/metrics-server"),
            "sigs.k8s.io/metrics-server/cmd/metrics-server",
        ],
        src,
        progress,
        f"go build metrics-server {METRICS_SERVER_VERSION}",
        count_packages=True,
    )


def tool_path(name: str, root: Path | None = None) -> Path:
    """Where the pinned version of a lab tool is (or will be) built."""
    _, version = TOOLS[name]
    return (root or cache_root()) / "tools" / f"{name}-{version}" / name


def build_tool(name: str, progress: Progress = print) -> Path:
    """Build a lab tool from its Go module once; later calls find it in the cache."""
    binary = tool_path(name)
    if binary.is_file():
        return binary
    if shutil.which("go") is None:
        raise BuildError(f"{name} is built with Go, and `go` is not on PATH")
    command, version = TOOLS[name]
    src = binary.parent / "src"
    src.mkdir(parents=True, exist_ok=True)
    module = command.split("/cmd/")[0]
    (src / "go.mod").write_text(
        f"// Generated by `wharf lab build`.\nmodule wharf.local/lab/{name}\n\ngo 1.26.0\n\n"
        f"require {module} {version}\n"
    )
    (src / "tools.go").write_text(f'//go:build tools\n\npackage tools\n\nimport _ "{command}"\n')
    _run(["go", "mod", "tidy"], src, progress, f"go mod tidy ({name})")
    progress(f"{name} {version}: compiling")
    partial = binary.with_suffix(".partial")
    _run(
        ["go", "build", "-v", "-trimpath", "-ldflags", "-s -w", "-o", str(partial), command],
        src,
        progress,
        f"go build {name} {version}",
        count_packages=True,
    )
    partial.rename(binary)  # only a complete binary counts as built
    return binary


def helm_path(root: Path | None = None) -> Path:
    """Where `build_helm` puts helm: beside the lab, per Helm release."""
    return (root or cache_root()) / "tools" / f"helm-{HELM_VERSION}" / "helm"


def build_helm(progress: Progress = print, root: Path | None = None) -> Path:
    """Build helm from its Go module (cached, once per release) for checking the chart."""
    target = helm_path(root)
    if target.is_file():
        return target
    if shutil.which("go") is None:
        raise BuildError("helm is built with Go, and `go` is not on PATH")
    src = target.parent / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(
        "// Generated by `wharf lab build --helm`.\nmodule wharf.local/lab/helm\n\ngo 1.26.0\n\n"
        f"require helm.sh/helm/v3 {HELM_VERSION}\n"
    )
    (src / "tools.go").write_text(
        '//go:build tools\n\npackage tools\n\nimport _ "helm.sh/helm/v3/cmd/helm"\n'
    )
    _run(["go", "mod", "tidy"], src, progress, "go mod tidy (helm)")
    progress(f"helm {HELM_VERSION}: compiling")
    partial = target.with_name("helm.partial")  # a killed build leaves no half binary as helm
    ldflags = f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"
    command = "helm.sh/helm/v3/cmd/helm"
    _run(
        ["go", "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(partial), command],
        src,
        progress,
        f"go build helm {HELM_VERSION}",
        count_packages=True,
    )
    partial.rename(target)
    return target


def loki_path(root: Path | None = None) -> Path:
    """Where `build_loki` puts Loki's single binary: beside the lab, per Loki release."""
    return (root or cache_root()) / "tools" / f"loki-{LOKI_VERSION}" / "loki"


def loki_replacements(loki_go_mod: str) -> list[str]:
    """Loki's own `replace` lines that name another module (its forks of memberlist, regexp…).

    A dependency's replaces are ignored by Go, so the wrapper module repeats them; the one that
    points into Loki's tree (`./pkg/push`) is left out: that nested module is not in the zip and
    resolves from the proxy at the version Loki requires.
    """
    found = re.findall(r"^replace\s+(\S+)\s+=>\s+(\S+)\s+(\S+)\s*$", loki_go_mod, re.M)
    return [f"replace {old} => {new} {version}" for old, new, version in found]


def build_loki(progress: Progress = print, root: Path | None = None) -> Path:
    """Build Grafana Loki's single binary from its Go module (cached, once per release)."""
    target = loki_path(root)
    if target.is_file():
        return target
    if shutil.which("go") is None:
        raise BuildError("loki is built with Go, and `go` is not on PATH")
    src = target.parent / "src"
    src.mkdir(parents=True, exist_ok=True)
    module = LOKI_COMMAND.split("/cmd/")[0]
    go_mod = (_module_dir(module, LOKI_VERSION, src, progress) / "go.mod").read_text()
    go_line = re.search(r"^go (\S+)", go_mod, re.M)
    lines = [
        "// Generated by `wharf lab build --loki`.",
        "module wharf.local/lab/loki",
        "",
        f"go {go_line.group(1) if go_line else '1.26.0'}",
        "",
        f"require {module} {LOKI_VERSION}",
        "",
        *loki_replacements(go_mod),
    ]
    (src / "go.mod").write_text("\n".join(lines) + "\n")
    (src / "tools.go").write_text(
        f'//go:build tools\n\npackage tools\n\nimport _ "{LOKI_COMMAND}"\n'
    )
    _run(["go", "mod", "tidy"], src, progress, "go mod tidy (loki)")
    progress(f"loki {LOKI_VERSION}: compiling (a cold build takes several minutes)")
    partial = target.with_name("loki.partial")
    ldflags = f"-s -w -X github.com/grafana/loki/v3/pkg/util/build.Version={LOKI_VERSION}"
    _run(
        ["go", "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(partial), LOKI_COMMAND],
        src,
        progress,
        f"go build loki {LOKI_VERSION}",
        count_packages=True,
    )
    partial.rename(target)
    return target


def victorialogs_path(command: str, root: Path | None = None) -> Path:
    """Where `build_victorialogs` puts `victoria-logs` or `vlagent`, per release."""
    if command not in VICTORIALOGS_COMMANDS:
        raise ValueError(f"{command} is not one of {', '.join(VICTORIALOGS_COMMANDS)}")
    return (root or cache_root()) / "tools" / f"victorialogs-{VICTORIALOGS_VERSION}" / command


def victorialogs_module(go_version: str = "1.26.0") -> str:
    """The wrapper module's go.mod: VictoriaLogs declares no `replace`, so requiring it is all."""
    return (
        "// Generated by `wharf lab build`: the log store and its collector.\n"
        f"module wharf.local/lab/victorialogs\n\ngo {go_version}\n\n"
        f"require {VICTORIALOGS_MODULE} {VICTORIALOGS_VERSION}\n"
    )


def build_victorialogs(progress: Progress = print, root: Path | None = None) -> dict[str, Path]:
    """Build VictoriaLogs (the log store) and vlagent (its collector) from their Go module,
    pure Go (CGO_ENABLED=0: klauspost's zstd, not the cgo one), cached once per release."""
    targets = {command: victorialogs_path(command, root) for command in VICTORIALOGS_COMMANDS}
    if all(path.is_file() for path in targets.values()):
        return targets
    if shutil.which("go") is None:
        raise BuildError("VictoriaLogs is built with Go, and `go` is not on PATH")
    directory = targets["vlagent"].parent
    src = directory / "src"
    src.mkdir(parents=True, exist_ok=True)
    go_mod = _module_dir(VICTORIALOGS_MODULE, VICTORIALOGS_VERSION, src, progress) / "go.mod"
    go_line = re.search(r"^go (\S+)", go_mod.read_text(), re.M)
    (src / "go.mod").write_text(victorialogs_module(go_line.group(1) if go_line else "1.26.0"))
    imports = "\n".join(
        f'\t_ "{VICTORIALOGS_MODULE}/app/{command}"' for command in VICTORIALOGS_COMMANDS
    )
    (src / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")
    _run(["go", "mod", "tidy"], src, progress, "go mod tidy (victorialogs)")
    progress(f"victorialogs {VICTORIALOGS_VERSION}: compiling (a cold build takes a few minutes)")
    partial = directory / "partial"
    partial.mkdir(exist_ok=True)
    ldflags = (
        "-s -w -X github.com/VictoriaMetrics/VictoriaMetrics/lib/buildinfo.Version="
        f"victoria-logs-{VICTORIALOGS_VERSION}"
    )
    _run(
        [
            "go",
            "build",
            "-v",
            "-trimpath",
            "-ldflags",
            ldflags,
            "-o",
            str(partial) + "/",
            *(f"{VICTORIALOGS_MODULE}/app/{command}" for command in VICTORIALOGS_COMMANDS),
        ],
        src,
        progress,
        f"go build victorialogs {VICTORIALOGS_VERSION}",
        count_packages=True,
    )
    for command, target in targets.items():
        (partial / command).rename(target)  # only complete binaries count as built
    partial.rmdir()
    return targets


def build(progress: Progress = print, versions: Sequence[str] = KUBERNETES_VERSIONS) -> BuildResult:
    """Build (or find already built) every lab binary; return where they are."""
    if shutil.which("go") is None:
        raise BuildError("the lab is built with Go, and `go` is not on PATH")
    started = time.monotonic()
    root_all = cache_root()
    failed: dict[str, str] = {}
    built: list[str] = []
    skipped: list[str] = []
    for version in versions:
        root = root_all / version
        (root / "bin").mkdir(parents=True, exist_ok=True)
        if all((root / "bin" / c).is_file() for c in KUBERNETES_COMMANDS):
            skipped += KUBERNETES_COMMANDS
            progress(f"kubernetes {version}: already built in {root / 'bin'}")
            break
        try:
            _build_kubernetes(version, root, progress)
            built += KUBERNETES_COMMANDS
            break
        except BuildError as exc:
            failed[version] = str(exc)
            progress(f"kubernetes {version} did not build; trying the next older release")
    else:
        raise BuildError(
            "no Kubernetes release built:\n"
            + "\n\n".join(f"k8s.io/kubernetes@{v}: {err}" for v, err in failed.items())
        )
    manifest = root / "build.json"
    recorded = json.loads(manifest.read_text()) if manifest.is_file() else {}
    etcd_version = recorded.get("etcd_version", ETCD_VERSION)
    if (root / "bin/etcd").is_file():
        skipped.append("etcd")
    else:
        etcd_version = _build_etcd(root, progress)
        built.append("etcd")
    (skipped if (root / "bin/kwok").is_file() else built).append("kwok")
    _build_kwok(root, progress)
    for tool in TOOLS:
        (skipped if tool_path(tool).is_file() else built).append(tool)
        build_tool(tool, progress)
    logs_built = all(victorialogs_path(c).is_file() for c in VICTORIALOGS_COMMANDS)
    (skipped if logs_built else built).append("victorialogs")
    build_victorialogs(progress)
    if (root / "bin/metrics-server").is_file():
        skipped.append("metrics-server")
    else:
        _build_metrics_server(root, progress)
        built.append("metrics-server")
    binaries = LabBinaries(
        root=root, kubernetes_version=version, etcd_version=etcd_version, kwok_version=KWOK_VERSION
    )
    record = {
        "kubernetes_version": version,
        "etcd_version": etcd_version,
        "kwok_version": KWOK_VERSION,
        "metrics_server_version": METRICS_SERVER_VERSION,
        "failed_versions": failed,
    }
    manifest.write_text(json.dumps(record, indent=2) + "\n")
    (root_all / "current.json").write_text(json.dumps(record, indent=2) + "\n")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return BuildResult(
        binaries=binaries,
        seconds=time.monotonic() - started,
        peak_rss_mib=peak_kib / 1024,
        built=built,
        skipped=skipped,
        failed_versions=failed,
    )


def describe(result: BuildResult) -> dict[str, object]:
    data = asdict(result)
    data["binaries"]["root"] = str(result.binaries.root)
    return data
