"""`wharf explain KIND[.field.path]`: a kind's fields from its JSON Schema, as `kubectl explain`
prints them — type, description, default, allowed values, limits, and the fields below.

It reads the schema the server serves (/api/v1/schemas/<kind>.json), so a CLI explains the
kinds of the server it talks to, whatever its own version.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

from wharf.core.errors import NotFoundError

Schema = dict[str, Any]
LIMITS = (
    ("minimum", ">= {}"),
    ("maximum", "<= {}"),
    ("minLength", "at least {} characters"),
    ("maxLength", "at most {} characters"),
    ("minItems", "at least {} items"),
    ("minProperties", "at least {} entries"),
    ("pattern", "matches {}"),
)


def _resolve(root: Schema, node: Schema) -> Schema:
    """Follow $ref and unwrap `X or null`, keeping the outer description and default."""
    outer = {k: v for k, v in node.items() if k in ("description", "default")}
    while True:
        if "$ref" in node:
            node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        elif "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            if len(options) != 1:
                break
            node = {**{k: v for k, v in node.items() if k != "anyOf"}, **options[0]}
        else:
            break
    return {**node, **{k: v for k, v in outer.items() if k not in node or k == "description"}}


def type_name(root: Schema, node: Schema) -> str:
    if "$ref" in node:
        return str(node["$ref"].rsplit("/", 1)[-1])
    if "anyOf" in node:
        names = [type_name(root, o) for o in node["anyOf"] if o.get("type") != "null"]
        return " | ".join(names)
    kind = node.get("type", "any")
    if kind == "array":
        return f"[]{type_name(root, node.get('items', {}))}"
    if kind == "object":
        values = node.get("additionalProperties")
        if isinstance(values, dict):
            return f"map[string]{type_name(root, values)}"
        return "Object" if node.get("properties") else "object"
    return str(kind)


def _children(root: Schema, node: Schema) -> tuple[str, Schema] | None:
    """The object whose fields sit below `node` (a map's or a list's values), and how a key
    of it is written."""
    node = _resolve(root, node)
    if node.get("properties"):
        return "", node
    values = node.get("additionalProperties")
    if isinstance(values, dict) and _resolve(root, values).get("properties"):
        return "<key>", _resolve(root, values)
    items = node.get("items")
    if isinstance(items, dict) and _resolve(root, items).get("properties"):
        return "-", _resolve(root, items)
    return None


def _step(root: Schema, node: Schema, part: str, where: str) -> Schema:
    below = _children(root, node)
    fields = below[1].get("properties", {}) if below else {}
    if part in fields:
        return dict(fields[part])
    known = ", ".join(fields) or "none: it is a value, not an object"
    raise NotFoundError(f"{where}: no field {part!r}; its fields are: {known}", field=where)


def _facts(root: Schema, node: Schema) -> list[str]:
    resolved = _resolve(root, node)
    facts = []
    allowed = resolved.get("enum") or ([resolved["const"]] if "const" in resolved else None)
    if allowed:
        facts.append("ALLOWED:  " + ", ".join(str(v) for v in allowed))
    default = node.get("default", resolved.get("default"))
    if default is not None:
        facts.append(f"DEFAULT:  {json.dumps(default)}")
    limits = [text.format(resolved[key]) for key, text in LIMITS if key in resolved]
    if limits:
        facts.append("LIMITS:   " + "; ".join(limits))
    return facts


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, 96, initial_indent=indent, subsequent_indent=indent) or [indent]


def _skeleton(root: Schema, path: list[str], node: Schema) -> list[str]:
    """A YAML outline of the field: what a user writes, with each child's type."""
    below = _children(root, node)
    name = path[-1] if path else root.get("title", "")
    if below is None:
        return [f"{name}: <{type_name(root, node)}>"]
    key, obj = below
    lines = [f"{name}:"]
    indent = "  "
    if key == "<key>":
        lines.append(f"  <key>:  # {type_name(root, _resolve(root, node)['additionalProperties'])}")
        indent = "    "
    for i, (field, sub) in enumerate(obj.get("properties", {}).items()):
        lead = indent[:-2] + "- " if key == "-" and i == 0 else indent
        lines.append(f"{lead}{field}: <{type_name(root, sub)}>")
    return lines


def explain(schema: Schema, path: list[str]) -> str:
    """What `wharf explain kind.a.b` prints for the kind's JSON Schema and the path a.b."""
    node: Schema = {k: v for k, v in schema.items() if k != "$defs"}
    where = schema.get("title", "")
    for part in path:
        node = _step(schema, node, part, where)
        where = f"{where}.{part}"
    resolved = _resolve(schema, node)
    lines = [f"KIND:     {schema.get('title', '')}"]
    if path:
        lines.append(f"FIELD:    {'.'.join(path)} <{type_name(schema, node)}>")
    lines += ["", "DESCRIPTION:"]
    lines += _wrap(node.get("description") or resolved.get("description") or "(none)", "    ")
    inner = resolved.get("additionalProperties", resolved.get("items", node))
    if isinstance(inner, dict) and ("$ref" in inner or "anyOf" in inner):
        own = _resolve(schema, {k: v for k, v in inner.items() if k != "description"})
        if own.get("description") and own["description"] != node.get("description"):
            lines += ["", *_wrap(f"{type_name(schema, inner)}: {own['description']}", "    ")]
    facts = _facts(schema, node)
    if facts:
        lines += ["", *facts]
    below = _children(schema, node)
    if below is not None:
        lines += ["", "FIELDS:"]
        obj = below[1]
        required = set(obj.get("required", []))
        for field, sub in obj.get("properties", {}).items():
            flag = " -required-" if field in required else ""
            lines.append(f"  {field}\t<{type_name(schema, sub)}>{flag}")
            lines += _wrap(_resolve(schema, sub).get("description", ""), "    ")
            lines += ["    " + f for f in _facts(schema, sub)]
            lines.append("")
        lines += ["WRITE IT AS:", *("  " + line for line in _skeleton(schema, path, node))]
    return "\n".join(lines).rstrip() + "\n"
