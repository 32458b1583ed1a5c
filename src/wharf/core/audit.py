"""Pure parts of the audit trail: the spec diff of a change, with secret values masked.

A secret is masked before it is compared, so that the diff records *that* a credential changed
without ever storing either value.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

MASK = "***"


def mask(spec: dict[str, Any] | None, secret_fields: tuple[str, ...]) -> dict[str, Any] | None:
    """A copy of spec with each secret field (dotted path) replaced by a short fingerprint."""
    if spec is None:
        return None
    out: dict[str, Any] = json.loads(json.dumps(spec))
    for dotted in secret_fields:
        *parents, leaf = dotted.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(leaf) not in (
            None,
            "",
            {},
            [],
        ):  # empty: nothing to hide
            digest = hashlib.sha256(json.dumps(node[leaf], sort_keys=True).encode()).hexdigest()
            node[leaf] = f"{MASK}{digest[:8]}"
    return out


def diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """A list of {path, old, new} for every leaf that differs (dicts recursed, lists whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[dict[str, Any]] = []
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else str(key)
            changes += diff(old.get(key), new.get(key), sub)
        return changes
    if old == new:
        return []
    return [{"path": path, "old": old, "new": new}]
