"""The CLI's client of the REST API: where the server is, the saved token, readable errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from wharf.core import documents
from wharf.core.errors import WharfError


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(os.environ.get("WHARF_CONFIG") or Path(base) / "wharf" / "config.yaml")


def load_config() -> dict[str, Any]:
    try:
        data = documents.load(config_path().read_text()) or {}
    except FileNotFoundError:
        data = {}
    return data if isinstance(data, dict) else {}


def save_config(data: dict[str, Any]) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)
    return path


class ApiError(WharfError):
    """An error answer from the server, with its code and message."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("message", body)), field=body.get("field"))
        self.status_code = status
        self.error_code = str(body.get("code", "error"))


class ApiClient:
    def __init__(self, server: str | None = None, token: str | None = None) -> None:
        config = load_config()
        self.server = (
            server
            or os.environ.get("WHARF_SERVER")
            or config.get("server")
            or "http://127.0.0.1:8700"
        )
        self.token = token or os.environ.get("WHARF_TOKEN") or config.get("token")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=60.0)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(  # noqa: B904 - the transport error is in the message
                0,
                {
                    "message": f"cannot reach the Wharf server at {self.server}: "
                    f"{exc} (is `wharf server` running? see `wharf login`)"
                },
            )
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"message": response.text or response.reason_phrase}
            raise ApiError(
                response.status_code, body if isinstance(body, dict) else {"message": body}
            )
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()


def fail(exc: ApiError) -> SystemExit:
    """Print an API error the way a CLI user wants it: status, message, the field at fault."""
    where = f" [{exc.field}]" if exc.field else ""
    code = f" ({exc.status_code} {exc.error_code})" if exc.status_code else ""
    sys.stderr.write(f"error{code}: {exc.message}{where}\n")
    return SystemExit(1)
