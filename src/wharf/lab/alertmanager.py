"""A real Alertmanager (Debian's prometheus-alertmanager) on loopback, for alerts in the tests
and the demo.

It routes every alert to Wharf's receiver (`/api/v1/alerting/receiver`) with the bearer token
Wharf generated (read from its file on each delivery, so Wharf may create it later), grouped
as Wharf's incidents are: by tenant, project, rule, application and cluster.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from wharf.lab.prometheus import free_port

BINARY = "/usr/bin/prometheus-alertmanager"
GROUP_BY = ["tenant", "project", "wharf_rule", "app", "cluster"]


class Alertmanager:
    """One Alertmanager process; `start()` returns once it is ready. Short group timings
    (`group_wait`, `group_interval`) make a test see a notification within seconds."""

    def __init__(
        self,
        workdir: Path,
        receiver_url: str,
        token_file: Path,
        group_wait: str = "1s",
        group_interval: str = "1s",
        repeat_interval: str = "1h",
    ) -> None:
        self.workdir = workdir
        self.receiver_url = receiver_url
        self.token_file = token_file
        self.timings = {
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        }
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, object]:
        receiver = {
            "url": self.receiver_url,
            "send_resolved": True,
            "http_config": {
                "authorization": {"type": "Bearer", "credentials_file": str(self.token_file)}
            },
        }
        return {
            "route": {"receiver": "wharf", "group_by": GROUP_BY, **self.timings},
            "receivers": [{"name": "wharf", "webhook_configs": [receiver]}],
        }

    def start(self, timeout: float = 60.0) -> None:
        binary = shutil.which("prometheus-alertmanager") or BINARY
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "alertmanager.yml"
        config.write_text(yaml.safe_dump(self.config()))
        with (self.workdir / "alertmanager.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.path={self.workdir / 'data'}",
                    f"--web.listen-address={self.address}",
                    # A lone instance: no gossip, but the flag must name a free port or none.
                    "--cluster.listen-address=",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"alertmanager did not start; see {self.workdir}/alertmanager.log"
                )
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                return int(answer.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
