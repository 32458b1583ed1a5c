"""A parameter form from a template's JSON Schema, and the values it posts back, typed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wharf.core.errors import InvalidError

PREFIX = "v."  # form fields of values are named v.<parameter>, apart from the form's own


@dataclass(frozen=True)
class Field:
    name: str
    input: str  # text | number | checkbox | select | json
    required: bool
    value: str
    description: str = ""
    options: list[str] = field(default_factory=list)
    pattern: str = ""
    step: str = ""
    checked: bool = False

    @property
    def form_name(self) -> str:
        return PREFIX + self.name

    @property
    def id(self) -> str:
        return "param-" + self.name.replace("_", "-")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def fields_of(schema: Mapping[str, Any], values: Mapping[str, Any]) -> list[Field]:
    """One input per parameter, in the schema's order, filled with the value or the default."""
    required = set(schema.get("required", []))
    out = []
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type", "string")
        current = values.get(name, prop.get("default"))
        common: dict[str, Any] = {
            "name": name,
            "required": name in required,
            "description": prop.get("description", ""),
        }
        if "enum" in prop:
            out.append(
                Field(
                    input="select",
                    value=_text(current),
                    options=[_text(o) for o in prop["enum"]],
                    **common,
                )
            )
        elif kind == "boolean":
            out.append(Field(input="checkbox", value="true", checked=bool(current), **common))
        elif kind in ("integer", "number"):
            step = "1" if kind == "integer" else "any"
            out.append(Field(input="number", value=_text(current), step=step, **common))
        elif kind in ("array", "object"):
            out.append(Field(input="json", value=_text(current), **common))
        else:
            out.append(
                Field(input="text", value=_text(current), pattern=prop.get("pattern", ""), **common)
            )
    return out


def values_from(schema: Mapping[str, Any], form: Mapping[str, str]) -> dict[str, Any]:
    """The posted parameters as typed values; an empty optional one is left to its default.

    Only the type is checked here; the template's schema is checked in full on delivery."""
    values: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type", "string")
        where = f"values.{name}"
        if kind == "boolean" and "enum" not in prop:
            values[name] = form.get(PREFIX + name) == "true"
            continue
        raw = form.get(PREFIX + name, "").strip()
        if raw == "":
            if name in set(schema.get("required", [])):
                raise InvalidError(f"{where}: required", field=where)
            continue
        if "enum" in prop:
            choices = {_text(o): o for o in prop["enum"]}
            if raw not in choices:
                raise InvalidError(f"{where}: choose one of {', '.join(choices)}", field=where)
            values[name] = choices[raw]
        elif kind == "integer":
            try:
                values[name] = int(raw)
            except ValueError:
                raise InvalidError(f"{where}: {raw!r} is not a whole number", field=where) from None
        elif kind == "number":
            try:
                number = float(raw)
            except ValueError:
                raise InvalidError(f"{where}: {raw!r} is not a number", field=where) from None
            values[name] = int(number) if number.is_integer() else number
        elif kind in ("array", "object"):
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise InvalidError(f"{where}: not JSON ({exc.msg})", field=where) from None
            if not isinstance(parsed, list if kind == "array" else dict):
                raise InvalidError(f"{where}: must be a JSON {kind}", field=where)
            values[name] = parsed
        else:
            values[name] = raw
    return values
