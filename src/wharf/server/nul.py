"""Refuse NUL characters (U+0000) in a request's path, query or JSON body.

PostgreSQL text cannot hold them (SQLite can), so without this a name or label carrying one was
a 500 on PostgreSQL only (found by the conformance run). Refused here, before any route, with
the same 422 on both databases.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wharf.core.errors import InvalidError


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _where(scope: Scope, body: bytes) -> str | None:
    if "\x00" in scope["path"]:
        return "path"
    if b"%00" in scope["query_string"] or b"\x00" in scope["query_string"]:
        return "query"
    if b"\x00" in body:
        return "body"
    if b"\\u0000" in body:  # JSON's spelling; parse to tell it from an escaped backslash
        try:
            return "body" if _holds_nul(json.loads(body)) else None
        except ValueError:
            return None
    return None


class RefuseNul:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        where = _where(scope, b"".join(m.get("body", b"") for m in messages))
        if where is not None:
            error = InvalidError(
                f"{where}: holds a NUL character (U+0000), which Wharf does not store", field=where
            )
            await JSONResponse(error.body(), status_code=error.status)(scope, receive, send)
            return
        pending = iter(messages)

        async def replay() -> Message:
            return next(pending, None) or await receive()

        await self.app(scope, replay, send)
