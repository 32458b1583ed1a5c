"""A real Prometheus (Debian's package) on loopback, for release analysis, the monitoring feed
and charts, in the tests and the demo.

It scrapes the targets it is given every `interval` and keeps the labels they expose
(`honor_labels`), so that an exporter can speak for many namespaces, clusters and revisions.
Wharf's own workload feed is one more job (`wharf_feed`): its path, with the scrape token.
Given a rules directory and an Alertmanager, it evaluates the rule files Wharf writes there
(reloaded through /-/reload, hence --web.enable-lifecycle) and sends what fires to it.

It sends what fires again at every evaluation (`--rules.alert.resend-delay` = the interval,
not the default minute): a reload empties Prometheus' list of Alertmanagers for up to 5 s
(prometheus/prometheus#13064, so in Debian 12's 2.42), and a notification sent meanwhile is
dropped; with the default delay an alert that starts firing just after a rule changed reaches
Alertmanager a minute late, or never when it stops firing within that minute.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

BINARY = "/usr/bin/prometheus"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


WORKLOADS_PATH = "/metrics/workloads"


@dataclass(frozen=True)
class ScrapeJob:
    """One more scrape job: targets (host:port), the path, and a bearer token if it needs one."""

    name: str
    targets: list[str]
    path: str = "/metrics"
    token: str | None = None

    def config(self) -> dict[str, object]:
        job: dict[str, object] = {
            "job_name": self.name,
            "honor_labels": True,
            "metrics_path": self.path,
            "static_configs": [{"targets": self.targets}],
        }
        if self.token:
            job["authorization"] = {"type": "Bearer", "credentials": self.token}
        return job


def wharf_feed(server_url: str, token: str | None) -> ScrapeJob:
    """The job that scrapes a Wharf server's workload feed (docs/observability.md)."""
    host = urllib.parse.urlsplit(server_url).netloc
    return ScrapeJob("wharf-workloads", [host], WORKLOADS_PATH, token)


class Prometheus:
    """One Prometheus process; `start()` returns once it answers queries."""

    def __init__(
        self,
        workdir: Path,
        targets: list[str],
        interval: str = "1s",
        jobs: list[ScrapeJob] | None = None,
        port: int | None = None,
        rules_dir: Path | None = None,
        alertmanager: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.rules_dir = rules_dir
        self.alertmanager = alertmanager  # host:port
        self.targets = targets
        self.jobs = list(jobs or [])
        self.interval = interval
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> Path:
        config: dict[str, object] = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "scrape_configs": [
                job.config()
                for job in [ScrapeJob("wharf-test", self.targets), *self.jobs]
                if job.targets
            ],
        }
        if self.rules_dir is not None:
            self.rules_dir.mkdir(parents=True, exist_ok=True)
            config["rule_files"] = [str(self.rules_dir / "*.yml")]
        if self.alertmanager is not None:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": [self.alertmanager]}]}]
            }
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self, timeout: float = 60.0) -> None:
        binary = shutil.which("prometheus") or BINARY
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "prometheus.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self._config()}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",  # Wharf reloads its rule files through /-/reload
                    f"--rules.alert.resend-delay={self.interval}",  # see the module's docstring
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start; see {self.workdir}/prometheus.log")
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                return int(answer.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def query(self, promql: str) -> list[dict[str, object]]:
        """An instant query's result vector (for tests and the demo's own checks)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = json.load(answer)
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
