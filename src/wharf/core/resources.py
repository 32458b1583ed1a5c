"""Declarative resources: apiVersion, kind, metadata, spec, status, as kubectl users expect.

One generic shape serves every kind; a kind only adds its spec model (pydantic), the fields of
its spec that are secrets, and whether it lives at platform scope or inside a tenant.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
)

from wharf.core.errors import InvalidError, OutdatedSpecError

API_VERSION: Literal["wharf.io/v1"] = "wharf.io/v1"
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_KEY_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")

Scope = Literal["platform", "tenant"]
NAME_SCHEMA: dict[str, Any] = {"pattern": NAME_RE.pattern, "maxLength": 40}


def check_name(name: str, where: str = "metadata.name", max_length: int = 40) -> str:
    """Names become parts of Kubernetes names, so they follow DNS-label rules (shorter)."""
    if not NAME_RE.fullmatch(name) or len(name) > max_length:
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
    """One observed fact about an object, as Kubernetes conditions are."""

    type: str = Field(description="What the condition is about, e.g. Ready or Delivered")
    status: Literal["True", "False", "Unknown"] = Field(description="Whether it holds")
    reason: str = Field(default="", description="A CamelCase word for why")
    message: str = Field(default="", description="Why, in a sentence a person can act on")
    lastTransitionTime: str = Field(
        default="", description="When status last changed (RFC 3339, UTC)"
    )
    observedGeneration: int = Field(
        default=0, description="The metadata.generation the condition was computed from"
    )


class Metadata(BaseModel):
    """Who an object is: its name, owner, labels, and the server's bookkeeping."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        description="Unique within the kind (and tenant): lowercase letters, digits and '-', "
        "starting and ending with a letter or digit",
        json_schema_extra=NAME_SCHEMA,  # checked by check_name, whose errors say more
    )
    tenant: str | None = Field(
        default=None,
        description="The owning tenant (tenant-scoped kinds); the URL's tenant when omitted",
        json_schema_extra=NAME_SCHEMA,
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Kubernetes-style labels, to select on in lists (labelSelector, wharf get -l)",
        json_schema_extra={
            "propertyNames": {"pattern": LABEL_KEY_RE.pattern, "maxLength": 253},
            "additionalProperties": {
                "type": "string",
                "pattern": LABEL_VALUE_RE.pattern,
                "maxLength": 63,
            },
        },
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Free-form notes for tools and people"
    )
    uid: str | None = Field(default=None, description="Set by the server; ignored when sent")
    generation: int | None = Field(
        default=None, description="Set by the server: moves when the spec changes"
    )
    resourceVersion: str | None = Field(
        default=None,
        pattern=r"^[0-9]{1,18}$",  # a number the store compares, not any text (was a 500)
        description="Set by the server on every write; send it back to refuse a stale update (409)",
    )
    creationTimestamp: str | None = Field(
        default=None, description="Set by the server (RFC 3339, UTC)"
    )
    updateTimestamp: str | None = Field(
        default=None, description="Set by the server (RFC 3339, UTC)"
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            if not LABEL_KEY_RE.fullmatch(key) or len(key) > 253:
                raise ValueError(f"label key {key!r} is not a valid Kubernetes label key")
            if not LABEL_VALUE_RE.fullmatch(value) or len(value) > 63:
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


class Status(BaseModel):
    """What the platform observed. Controllers write it; a status sent by a client is ignored.
    Besides conditions, each kind's controller reports its own fields (phase, capacity, …)."""

    model_config = ConfigDict(extra="allow")

    conditions: list[Condition] = Field(
        default_factory=list, description="Observed facts, one per type"
    )
    observedGeneration: int | None = Field(
        default=None, description="The metadata.generation the status was computed from"
    )


class Resource(BaseModel):
    """The shape every kind shares; `resource_model` adds the kind's name and spec."""

    model_config = ConfigDict(extra="forbid")

    apiVersion: Literal["wharf.io/v1"] = Field(
        default=API_VERSION, description="The API version: wharf.io/v1"
    )
    metadata: Metadata
    status: Status = Field(
        default_factory=Status, description="Observed by the platform; ignored when sent"
    )


class ListMeta(BaseModel):
    """Where a page of a list ends."""

    continue_: str | None = Field(
        default=None,
        alias="continue",
        description="Send as ?continue= for the next page; null on the last page",
    )


S = TypeVar("S", bound=Spec)
M = TypeVar("M", bound=BaseModel)


class Stored(Protocol):
    """What a stored object offers to typed reading (the store's record is one)."""

    @property
    def kind(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def spec(self) -> Mapping[str, Any]: ...


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(["spec", *(str(p) for p in loc)])


def spec_of(stored: Stored, model: type[M]) -> M:
    """A stored object's spec as `model`. A row written under older rules that today's model
    refuses is an OutdatedSpecError naming the object and the field: a caller reports it
    (a 409, a status condition), it does not crash on it."""
    return _kept(model, stored.kind, stored.tenant, stored.name, stored.spec)


def _kept(model: type[M], kind: str, tenant: str, name: str, spec: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(dict(spec))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _where(first["loc"])
        owner = f" in tenant {tenant!r}" if tenant else ""
        raise OutdatedSpecError(
            f"{kind} {name!r}{owner}: its stored spec no longer meets today's "
            f"rules ({where}: {first['msg']}); apply it again with a valid spec",
            field=where,
            kind=kind,
            name=name,
        ) from None


@dataclass(frozen=True)
class Kind(Generic[S]):
    """A kind of resource: its names, scope, spec model and secret spec fields."""

    name: str
    plural: str
    scope: Scope
    spec: type[S]
    secret_fields: tuple[str, ...] = ()
    short_names: tuple[str, ...] = ()
    columns: tuple[tuple[str, str], ...] = field(default=())

    def parse_spec(self, data: Mapping[str, Any]) -> S:
        """A spec a client sent: 422 naming every field at fault."""
        try:
            return self.spec.model_validate(dict(data))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = _where(first["loc"])
            raise InvalidError(
                f"{where}: {first['msg']}",
                field=where,
                errors=[{"field": _where(e["loc"]), "message": e["msg"]} for e in exc.errors()],
            ) from None

    def typed(self, stored: Stored) -> S:
        """A stored object's spec as the kind's model (see `spec_of` for old rows)."""
        if stored.kind != self.name:
            raise TypeError(f"a {stored.kind} is not a {self.name}")
        return spec_of(stored, self.spec)

    def read(self, obj: Mapping[str, Any]) -> S:
        """The spec of an object as the API answers it, as the kind's model: for pages and
        tools that hold the answer rather than the row. Not for a kind with secret fields,
        whose answer masks them (its rows are read with `typed`)."""
        if self.secret_fields:
            raise TypeError(f"a {self.name} answer masks its secrets: read its stored row")
        meta = obj.get("metadata") or {}
        tenant, name = str(meta.get("tenant") or ""), str(meta.get("name", ""))
        return _kept(self.spec, self.name, tenant, name, obj.get("spec") or {})

    def dump(self, spec: S) -> dict[str, Any]:
        """The spec as stored: JSON, by alias, without unset optional fields."""
        return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


@functools.cache
def resource_model(kind: Kind[Any]) -> type[Resource]:
    """The kind's whole object (apiVersion, kind, metadata, spec, status) as one model: what
    a client sends and what the server answers, named after the kind."""
    required = any(f.is_required() for f in kind.spec.model_fields.values())
    spec_field = (
        Field(description="Desired state")
        if required
        else Field(default_factory=kind.spec, description="Desired state")
    )
    fields: dict[str, Any] = {
        "kind": (Literal[kind.name], Field(description=f"Always {kind.name}")),
        "spec": (kind.spec, spec_field),
    }
    doc = (kind.spec.__doc__ or f"A {kind.name}.").strip()
    model: type[Resource] = create_model(kind.name, __base__=Resource, __doc__=doc, **fields)
    return model


@functools.cache
def list_model(kind: Kind[Any]) -> type[BaseModel]:
    """A page of a kind's list: items in (tenant, name) order and where the page ends."""
    fields: dict[str, Any] = {
        "apiVersion": (Literal["wharf.io/v1"], Field(default=API_VERSION)),
        "kind": (Literal[f"{kind.name}List"], Field(description=f"Always {kind.name}List")),
        "metadata": (ListMeta, Field(description="Pagination")),
        "items": (list[resource_model(kind)], Field(description=f"The {kind.plural}")),  # type: ignore[misc]
    }
    doc = f"A page of {kind.plural}, in (tenant, name) order"
    model: type[BaseModel] = create_model(f"{kind.name}List", __doc__=doc, **fields)
    return model


def schema_url(kind: Kind[Any]) -> str:
    """Where the server serves the kind's JSON Schema (stable: editors and tools point here)."""
    return f"/api/v1/schemas/{kind.name.lower()}.json"


def kind_schema(kind: Kind[Any]) -> dict[str, Any]:
    """The kind's JSON Schema (draft 2020-12): for editors' YAML validation and completion,
    and for `wharf explain`."""
    schema = resource_model(kind).model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": schema_url(kind),
        **schema,
    }


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
