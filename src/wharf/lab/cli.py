"""`wharf lab build | up | down | status | kubeconfig`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from wharf.lab import crds
from wharf.lab.build import BuildError, build, build_helm, describe
from wharf.lab.lab import MAX_COMPACT_CLUSTERS, Lab, LabError, default_lab_dir
from wharf.lab.prometheus import Prometheus, wharf_feed

app = typer.Typer(help="Real local Kubernetes clusters for the demo, the tests and benchmarks.")

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir", help="Lab directory [default: $WHARF_LAB_DIR or ~/.local/state/wharf/lab]"
    ),
]


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
    return typer.Exit(1)


@app.command("build")
def build_command(
    output: Annotated[str, typer.Option("-o", "--output", help="text or json")] = "text",
    helm: Annotated[
        bool, typer.Option("--helm", help="Build only helm (for checking the chart), then stop")
    ] = False,
) -> None:
    """Build etcd, Kubernetes and kwok from the Go module proxy (cached; a cold build is slow)."""
    if helm:
        try:
            typer.echo(build_helm(progress=_say))
        except BuildError as exc:
            raise _fail(exc) from exc
        return
    try:
        result = build(progress=_say)
    except BuildError as exc:
        raise _fail(exc) from exc
    if output == "json":
        typer.echo(json.dumps(describe(result), indent=2))
        return
    b = result.binaries
    typer.echo(
        f"kubernetes {b.kubernetes_version}, etcd {b.etcd_version}, kwok {b.kwok_version}\n"
        f"binaries: {b.root / 'bin'}\n"
        f"built: {', '.join(result.built) or 'nothing (all cached)'}\n"
        f"time: {result.seconds:.0f}s, peak memory of a build step: {result.peak_rss_mib:.0f} MiB"
    )


@app.command("up")
def up_command(
    clusters: Annotated[
        int, typer.Option(min=1, max=MAX_COMPACT_CLUSTERS, help="Number of clusters")
    ] = 2,
    nodes: Annotated[int, typer.Option(min=1, max=500, help="Simulated nodes per cluster")] = 3,
    directory: DirOption = None,
    crd_bundles: Annotated[
        str,
        typer.Option(
            "--crds",
            help=f"CRD bundles to install, comma-separated ({', '.join(crds.BUNDLES)}), or 'none'",
        ),
    ] = ",".join(crds.DEFAULT_BUNDLES),
    compact: Annotated[
        bool,
        typer.Option(
            "--compact",
            help="Fewer processes per cluster and one shared etcd, for many clusters (up to "
            f"{MAX_COMPACT_CLUSTERS}): no metrics-server, storage provisioner or pod log files",
        ),
    ] = False,
) -> None:
    """Start the lab clusters (with the CRD bundles) and wait until their nodes are Ready."""
    lab = Lab(directory or default_lab_dir())
    started = time.monotonic()
    bundles = [] if crd_bundles == "none" else [b for b in crd_bundles.split(",") if b]
    try:
        members = lab.up(
            clusters=clusters, nodes=nodes, progress=_say, crd_bundles=bundles, compact=compact
        )
    except LabError as exc:
        raise _fail(exc) from exc
    for cluster in members:
        typer.echo(f"{cluster.name}\t{cluster.server}\t{cluster.kubeconfig}")
    typer.echo(f"kubeconfig (all clusters): {lab.kubeconfig}")
    _say(f"ready in {time.monotonic() - started:.1f}s")


@app.command("prometheus")
def prometheus_command(
    wharf: Annotated[str, typer.Option("--wharf", help="The Wharf server whose feed it scrapes")],
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="WHARF_METRICS_TOKEN", help="The server's scrape token"),
    ] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1")] = 9090,
    directory: DirOption = None,
) -> None:
    """Start Prometheus (Debian's) scraping the server's workload feed every 5 s; print its
    URL and leave it running (its pid is in <lab>/prometheus/pid)."""
    workdir = (directory or default_lab_dir()) / "prometheus"
    prometheus = Prometheus(workdir, [], "5s", [wharf_feed(wharf, token)], port)
    try:
        prometheus.start()
    except RuntimeError as exc:
        raise _fail(exc) from exc
    assert prometheus.proc is not None
    (workdir / "pid").write_text(f"{prometheus.proc.pid}\n")
    typer.echo(prometheus.url)


@app.command("down")
def down_command(directory: DirOption = None) -> None:
    """Stop every lab process (found by pid file)."""
    Lab(directory or default_lab_dir()).down(progress=_say)


@app.command("status")
def status_command(
    directory: DirOption = None,
    output: Annotated[str, typer.Option("-o", "--output", help="text or json")] = "text",
) -> None:
    """Show each cluster, its server, health, Ready nodes and processes."""
    rows = Lab(directory or default_lab_dir()).status()
    if output == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no lab clusters")
        raise typer.Exit(1)
    typer.echo(f"{'CLUSTER':<8} {'HEALTHY':<8} {'NODES':<6} {'MEMORY':<9} {'SERVER':<28} PROCESSES")
    for row in rows:
        procs = " ".join(f"{k}={'up' if v else 'down'}" for k, v in row["processes"].items())
        typer.echo(
            f"{row['cluster']:<8} {('yes' if row['healthy'] else 'no'):<8} "
            f"{row['nodes_ready']:<6} {str(row['memoryMiB']) + 'Mi':<9} {row['server']:<28} {procs}"
        )
    if not all(row["healthy"] for row in rows):
        raise typer.Exit(1)


@app.command("kubeconfig")
def kubeconfig_command(
    cluster: Annotated[str | None, typer.Argument(help="One cluster; all when omitted")] = None,
    directory: DirOption = None,
) -> None:
    """Print the path of a kubeconfig for the lab (merged, or one cluster's)."""
    lab = Lab(directory or default_lab_dir())
    try:
        path = lab.cluster(cluster).kubeconfig if cluster else lab.kubeconfig
    except LabError as exc:
        raise _fail(exc) from exc
    if not path.is_file():
        raise _fail(LabError("the lab is not up: run `wharf lab up`"))
    sys.stdout.write(f"{path}\n")
