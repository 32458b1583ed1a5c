"""A bound on request bodies, enforced before anything parses them.

A declared Content-Length over the bound is answered 413 at once; a body without one (chunked)
is counted as it arrives and cut off at the bound, so no route holds more than the bound in
memory. (FastAPI's own `max_body_size` answers a declared length with plain text, which a
client of this API cannot read as an error body; this one answers in the API's error format.)
"""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wharf.core.errors import PayloadTooLargeError


def too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the request body is larger than this server accepts ({limit} bytes; "
        "WHARF_MAX_BODY_BYTES)",
        limit=limit,
    )


class BodyTooLarge(HTTPException):
    """Raised while the body streams in: FastAPI's body parsing passes an HTTPException through
    (anything else becomes a 400), and the app's handler answers it in the API's format."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large(limit).message)
        self.limit = limit


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(send)
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, bounded, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(too_large(self.limit).body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
