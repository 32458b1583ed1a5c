"""Bounds on what a request may carry, enforced before anything parses it.

- Size: a declared Content-Length over the bound is answered 413 at once; a body without one
  (chunked) is counted as it arrives and cut off at the bound, so no route holds more than the
  bound in memory. (FastAPI's own `max_body_size` answers a declared length in plain text,
  which a client of this API cannot read as an error body; this one answers in its format.)
- NUL characters: nothing Wharf names or stores may hold one, and PostgreSQL refuses them in
  text, so a path, query or body that carries one (raw, `%00`, or JSON's `\\u0000`) is
  refused with 422 before it can reach a query.
"""

from __future__ import annotations

import json
import re

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wharf.core.errors import InvalidError, PayloadTooLargeError, WharfError

NUL = re.compile(rb"\x00|%00|\\u0000")  # in a path, a query or a form's body
NUL_IN_BODY = re.compile(rb"\x00|\\u0000")  # in any other body (JSON may say "%00" freely)
DRAIN_FACTOR = 16  # a refused body up to 16 times the bound is read and dropped (see _drain)
_CARRY = 5  # a NUL spelled over a chunk boundary: keep the last bytes of each chunk


def too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the request body is larger than this server accepts ({limit} bytes; "
        "WHARF_MAX_BODY_BYTES)",
        limit=limit,
    )


def nul_refused(where: str) -> InvalidError:
    return InvalidError(f"{where}: holds a NUL character, which no name or value may", field=where)


class RefusedInput(HTTPException):
    """Raised while the body streams in: FastAPI's body parsing passes an HTTPException through
    (anything else becomes a 400), and the app's handler answers with `error`."""

    def __init__(self, error: WharfError) -> None:
        super().__init__(error.status, error.message)
        self.error = error


class RequestBounds:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self._refused_at_once(scope)
        if refused is not None:
            await self._drain(scope, receive)
            await _answer(send, refused)
            return
        received = 0
        tail = b""
        form = (
            dict(scope["headers"])
            .get(b"content-type", b"")
            .startswith(b"application/x-www-form-urlencoded")
        )
        nul = NUL if form else NUL_IN_BODY

        async def bounded() -> Message:
            nonlocal received, tail
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > self.limit:
                    raise RefusedInput(too_large(self.limit))
                if nul.search(tail + chunk):
                    raise RefusedInput(nul_refused("body"))
                tail = (tail + chunk)[-_CARRY:]
            return message

        await self.app(scope, bounded, send)

    async def _drain(self, scope: Scope, receive: Receive) -> None:
        """Read (and drop) a refused body of modest size, so that the client, still sending,
        reads the answer instead of a reset connection; a larger one is cut off unread."""
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if not declared.isdigit() or int(declared) > DRAIN_FACTOR * self.limit:
            return
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                return

    def _refused_at_once(self, scope: Scope) -> WharfError | None:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return too_large(self.limit)
        if "\x00" in scope["path"] or NUL.search(scope.get("raw_path") or b""):
            return nul_refused("path")
        if NUL.search(scope.get("query_string", b"")):
            return nul_refused("query")
        return None


async def _answer(send: Send, error: WharfError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
