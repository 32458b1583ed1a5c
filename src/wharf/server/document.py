"""The OpenAPI document without a running server, for docs/openapi.json and SDK generators."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from wharf.core.config import Settings
from wharf.server.app import create_app


def openapi_document() -> str:
    """The document the server serves at /openapi.json, as stable, indented JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        # Nothing is opened: the app is built but never started, and the key is a stand-in.
        settings = Settings(database_url=f"sqlite:///{Path(tmp) / 'unused.db'}", secret_key="-")
        document = create_app(settings).openapi()
    return json.dumps(document, indent=2, ensure_ascii=False)
