"""What every benchmark here needs: a free loopback port, a real `wharf server` started and
waited for, and percentiles. The scripts import it from their own folder."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

PASSWORD = "bench-password-1"
SECRET_KEY = "bench"


def register_cluster(http: httpx.Client, name: str, kubeconfig: Path) -> None:
    """Register a lab cluster with the server by its kubeconfig (as a platform admin)."""
    http.put(
        f"/api/v1/clusters/{name}",
        json={
            "kind": "Cluster",
            "metadata": {"name": name},
            "spec": {"kubeconfig": kubeconfig.read_text()},
        },
    ).raise_for_status()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def host_busy() -> tuple[float, float]:
    """The machine's CPU time so far, busy and in all (seconds over every core, /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields) - idle) / TICK, sum(fields) / TICK


def start_server(
    port: int, env: dict[str, str], log: Path | None = None, timeout: float = 60
) -> subprocess.Popen[bytes]:
    """A `wharf server` on 127.0.0.1:port with the bench's admin password and key (and `env`
    on top), once /readyz answers; its output goes to `log` (or nowhere)."""
    full = {
        **os.environ,
        "WHARF_PORT": str(port),
        "WHARF_ADMIN_PASSWORD": PASSWORD,
        "WHARF_SECRET_KEY": SECRET_KEY,
        "WHARF_ALLOW_LOOPBACK_CLUSTERS": "true",  # the lab's clusters listen on loopback
        "WHARF_LOG_LEVEL": "warning",
        **env,
    }
    with log.open("wb") if log else open(os.devnull, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wharf", "server"], env=full, stdout=out, stderr=out
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = log.read_text() if log else ""
            raise SystemExit(f"the server exited ({proc.returncode}):\n{output}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become ready" + (f":\n{log.read_text()}" if log else ""))


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (1..99); a single value is every percentile of itself."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
