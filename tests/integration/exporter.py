"""A small metrics exporter the tests run and Prometheus scrapes: per-namespace, per-cluster,
per-revision request counters, whose error share a test turns good or bad."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Series = tuple[str, str, str, str]  # namespace, app, cluster, revision
PER_SCRAPE = 100  # requests each series serves between two scrapes


class Exporter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error_share: dict[Series, float] = {}
        self._counts: dict[Series, list[int]] = {}  # [ok, errors]
        self._server: ThreadingHTTPServer | None = None

    def serve(self, namespace: str, app: str, cluster: str, revision: int, errors: float) -> None:
        """From now on, this revision of the app in this cluster answers `errors` of its
        requests with a 500."""
        with self._lock:
            key = (namespace, app, cluster, str(revision))
            self._error_share[key] = errors
            self._counts.setdefault(key, [0, 0])

    def render(self) -> str:
        lines = ["# TYPE wharf_test_requests_total counter"]
        with self._lock:
            for key, share in sorted(self._error_share.items()):
                counts = self._counts[key]
                failed = round(PER_SCRAPE * share)
                counts[0] += PER_SCRAPE - failed
                counts[1] += failed
                ns, app, cluster, revision = key
                labels = f'namespace="{ns}",app="{app}",cluster="{cluster}",revision="{revision}"'
                lines.append(f'wharf_test_requests_total{{{labels},code="200"}} {counts[0]}')
                lines.append(f'wharf_test_requests_total{{{labels},code="500"}} {counts[1]}')
        return "\n".join(lines) + "\n"

    @property
    def address(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    @contextmanager
    def running(self) -> Iterator[Exporter]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
