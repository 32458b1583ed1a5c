"""Declarative resources: apiVersion, kind, metadata, spec, status, as kubectl users expect.

One generic shape serves every kind; a kind only adds its spec model (pydantic), the fields of
its spec that are secrets, and whether it lives at platform scope or inside a tenant.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from wharf.core.errors import InvalidError

API_VERSION = "wharf.io/v1"
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_KEY_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")

Scope = Literal["platform", "tenant"]


def check_name(name: str, where: str = "metadata.name", max_length: int = 40) -> str:
    """Names become parts of Kubernetes names, so they follow DNS-label rules (shorter)."""
    if not NAME_RE.match(name) or len(name) > max_length:
        raise InvalidError(
            f"{where}: {name!r} is not a valid name: use at most {max_length} lowercase letters, "
            "digits and '-', starting and ending with a letter or digit",
            field=where,
        )
    return name


class Spec(BaseModel):
    """Base of every kind's spec: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Condition(BaseModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    lastTransitionTime: str = ""
    observedGeneration: int = 0


class Metadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    tenant: str | None = Field(default=None, description="The owning tenant (tenant-scoped kinds)")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    generation: int | None = None
    resourceVersion: str | None = None
    creationTimestamp: str | None = None
    updateTimestamp: str | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            if not LABEL_KEY_RE.match(key) or len(key) > 253:
                raise ValueError(f"label key {key!r} is not a valid Kubernetes label key")
            if not LABEL_VALUE_RE.match(value) or len(value) > 63:
                raise ValueError(f"label {key}: value {value!r} is not a valid label value")
        return labels


class Manifest(BaseModel):
    """What a client sends: the whole object, of which the server keeps metadata and spec."""

    model_config = ConfigDict(extra="forbid")

    apiVersion: str = API_VERSION
    kind: str
    metadata: Metadata
    spec: dict[str, Any] = Field(default_factory=dict)
    status: dict[str, Any] | None = None


@dataclass(frozen=True)
class Kind:
    """A kind of resource: its names, scope, spec model and secret spec fields."""

    name: str
    plural: str
    scope: Scope
    spec: type[Spec]
    secret_fields: tuple[str, ...] = ()
    short_names: tuple[str, ...] = ()
    columns: tuple[tuple[str, str], ...] = field(default=())

    def parse_spec(self, data: Mapping[str, Any]) -> Spec:
        try:
            return self.spec.model_validate(dict(data))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(["spec", *(str(p) for p in first["loc"])])
            raise InvalidError(
                f"{where}: {first['msg']}",
                field=where,
                errors=[
                    {"field": ".".join(["spec", *(str(p) for p in e["loc"])]), "message": e["msg"]}
                    for e in exc.errors()
                ],
            ) from None


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: Literal["True", "False", "Unknown"],
    reason: str,
    message: str,
    generation: int,
) -> list[dict[str, Any]]:
    """Return conditions with `type_` set; lastTransitionTime moves only when status changes."""
    out = [dict(c) for c in conditions if c.get("type") != type_]
    old = next((c for c in conditions if c.get("type") == type_), None)
    transition = old["lastTransitionTime"] if old and old.get("status") == status else now()
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        lastTransitionTime=transition,
        observedGeneration=generation,
    )
    out.append(new.model_dump())
    return sorted(out, key=lambda c: str(c["type"]))


def condition(status: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    for c in status.get("conditions", []):
        if c.get("type") == type_:
            return dict(c)
    return None
