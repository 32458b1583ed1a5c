"""Errors a caller can act on, each with a stable code, an HTTP status and a docs link.

    WharfError
    ├── InvalidError          422  bad input: names the field and what is wrong
    ├── UnauthenticatedError  401  no or bad credentials
    ├── ForbiddenError        403  known object, action not allowed for this caller
    ├── NotFoundError         404  no such object, or one the caller may not know of
    ├── ConflictError         409  the name is taken, or a rule about other objects
    │   ├── StaleError        409  stale resourceVersion: read again and retry
    │   └── OutdatedSpecError 409  a stored spec today's rules refuse: apply a valid one
    ├── QuotaExceededError    422  the change would break the quota hierarchy (says by how much)
    ├── ThrottledError        429  too many failed attempts: retry after so many seconds
    └── PayloadTooLargeError  413  the request body is over the server's bound

A caller of another tenant gets NotFoundError, never ForbiddenError, so that an error never
reveals that an object exists.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

DOCS = "https://wharf.dev/docs/errors#"


class WharfError(Exception):
    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries besides its body."""
        return {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "docs": DOCS + self.code,
        }
        if self.field:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        return body


class InvalidError(WharfError):
    code = "invalid"
    status = 422


class UnauthenticatedError(WharfError):
    code = "unauthenticated"
    status = 401


class ForbiddenError(WharfError):
    code = "forbidden"
    status = 403


class NotFoundError(WharfError):
    code = "not_found"
    status = 404


class ConflictError(WharfError):
    code = "conflict"
    status = 409


class StaleError(ConflictError):
    """The object changed between read and write (optimistic concurrency)."""


class OutdatedSpecError(ConflictError):
    """A stored object's spec, written under older rules, that today's model refuses: it is
    reported (naming the object and the field) instead of failing deep inside a use case."""


class QuotaExceededError(WharfError):
    code = "quota_exceeded"
    status = 422


class PayloadTooLargeError(WharfError):
    code = "too_large"
    status = 413


class ThrottledError(WharfError):
    code = "throttled"
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, retryAfter=retry_after)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ErrorBody(BaseModel):
    """What every 4xx answer carries: a stable code, a message naming what is wrong and where."""

    code: Literal[
        "invalid",
        "unauthenticated",
        "forbidden",
        "not_found",
        "conflict",
        "quota_exceeded",
        "too_large",
        "throttled",
    ] = Field(description="Stable: clients branch on it, not on the message")
    message: str = Field(description="What is wrong and where, for a person")
    docs: str = Field(description="Where the code is explained")
    field: str | None = Field(
        default=None,
        description="The field at fault as a dotted path (spec.quota.cpu, metadata.name, limit)",
    )
    details: dict[str, Any] | None = Field(
        default=None,
        description="More, by code: `errors` lists every field at fault ({field, message}); "
        "quota_exceeded names `resource` and `exceededBy` or `shortBy`",
    )
