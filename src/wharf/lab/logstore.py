"""The lab's log store and collector: VictoriaLogs on loopback, and vlagent shipping the
simulated pods' log files (wharf.lab.podlogs) into it with the flags Wharf gives it.

In production a collector runs on every node (a DaemonSet reading /var/log/pods) and Wharf
renders its flags (`wharf.logs.model.collector_flags`): one file pattern per placed namespace,
each with the store tenant of the namespace's Wharf tenant and the fields that label its
lines. Here one vlagent reads every lab cluster's pod-log directory with the same flags, and is
restarted when Wharf's flags change (the checkpoints file keeps its read positions, as a
restarted DaemonSet pod's would). Part of the lab, not of Wharf.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from wharf.lab.build import victorialogs_path
from wharf.lab.prometheus import free_port

# The store's own bounds, under Wharf's (wharf.logs.model): a query without a time range, or a
# wider one, or a slower one, is refused by the store too.
MAX_QUERY_RANGE = "8d"
MAX_QUERY_DURATION = "30s"


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return int(answer.status) == 200
    except (urllib.error.URLError, OSError):
        return False


class _Process:
    """One binary, its log file, and a way to wait for its /health."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, args: list[str], timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / f"{self.name}.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(victorialogs_path(self.name)),
                    f"-httpListenAddr=127.0.0.1:{self.port}",
                    *args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not _ready(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {self.workdir}/{self.name}.log")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class LogStore:
    """VictoriaLogs (the store) and vlagent (the collector); `start()` returns once the store
    answers, `ship(flags)` (re)starts the collector with Wharf's flags."""

    def __init__(self, workdir: Path, retention: str = "7d") -> None:
        self.workdir = workdir
        self.retention = retention
        self.store = _Process("victoria-logs", workdir)
        self.collector = _Process("vlagent", workdir)
        self.url = self.store.url
        self.flags: list[str] | None = None

    def start(self, timeout: float = 60.0) -> None:
        self.store.start(
            [
                f"-storageDataPath={self.workdir / 'data'}",
                f"-retentionPeriod={self.retention}",
                f"-search.maxQueryTimeRange={MAX_QUERY_RANGE}",
                f"-search.maxQueryDuration={MAX_QUERY_DURATION}",
                "-delete.enable",  # Wharf's retention per tenant (wharf.logs.controller)
                "-loggerLevel=WARN",
            ],
            timeout,
        )

    def ship(self, flags: list[str], timeout: float = 60.0) -> None:
        """Run the collector with these flags (restarted only when they changed)."""
        if flags == self.flags and self.collector.proc and self.collector.proc.poll() is None:
            return
        self.collector.stop()
        self.flags = list(flags)
        if not flags:
            return
        self.collector.start(
            [
                f"-remoteWrite.url={self.url}/insert/multitenant/native",  # tenant per pattern
                f"-tmpDataPath={self.workdir / 'vlagent'}",
                "-remoteWrite.flushInterval=200ms",
                "-fileCollector.refreshInterval=1s",
                "-loggerLevel=WARN",
                *flags,
            ],
            timeout,
        )

    def insert(self, account: int, rows: list[dict[str, str]], stream: str) -> None:
        """Write lines straight into one store tenant, each with its own `_time` (the
        collector stamps lines when it reads them; lines from days ago come this way, as a
        backfill would): the store's JSON-lines insert API."""
        body = "".join(json.dumps(row) + "\n" for row in rows).encode()
        request = urllib.request.Request(
            f"{self.url}/insert/jsonline?_stream_fields={stream}",
            data=body,
            headers={
                "AccountID": str(account),
                "ProjectID": "0",
                "Content-Type": "application/stream+json",
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()
        self.flush()

    def flush(self) -> None:
        """Make what was written searchable now (the store's /internal/force_flush)."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=30) as answer:
            answer.read()

    def query(self, account: int, logsql: str, start: str, end: str) -> list[dict[str, str]]:
        """Ask the store itself (not through Wharf) for one store tenant's lines."""
        form = urllib.parse.urlencode(
            {"query": logsql, "start": start, "end": end, "limit": "10000"}
        ).encode()
        request = urllib.request.Request(
            f"{self.url}/select/logsql/query",
            data=form,
            headers={"AccountID": str(account), "ProjectID": "0"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            text = answer.read().decode()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def deleting(self) -> list[dict[str, object]]:
        """The store's delete tasks still running."""
        with urllib.request.urlopen(f"{self.url}/delete/active_tasks", timeout=30) as answer:
            tasks: list[dict[str, object]] = json.loads(answer.read() or b"[]") or []
        return tasks

    def stop(self) -> None:
        self.collector.stop()
        self.store.stop()
