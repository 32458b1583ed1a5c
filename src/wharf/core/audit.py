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
    """A copy of spec with each secret field (dotted path) replaced by short fingerprints. A
    map of secrets keeps its shape (its keys name the secrets, they are not secret): each value
    in it is fingerprinted, so that the answer still fits the kind's schema and a diff names the
    one value that changed."""
    if spec is None:
        return None
    out: dict[str, Any] = json.loads(json.dumps(spec))
    for dotted in secret_fields:
        *parents, leaf = dotted.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(leaf) not in (None, "", {}, []):
            node[leaf] = _fingerprinted(node[leaf])  # empty: nothing to hide
    return out


def _fingerprinted(value: Any) -> Any:
    if isinstance(value, dict) and value:
        return {key: _fingerprinted(inner) for key, inner in value.items()}
    digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
    return f"{MASK}{digest[:8]}"


def unmasked(sent: Any, masked: Any, old: Any) -> Any:
    """What a client meant by sending `sent` back where `masked` is what it was shown of the
    stored `old`: each fingerprint it left as it was stands for the stored value (unchanged),
    anything else is new."""
    if sent == masked:
        return old
    if isinstance(sent, dict) and isinstance(masked, dict) and isinstance(old, dict):
        return {
            key: unmasked(value, masked[key], old[key]) if key in masked and key in old else value
            for key, value in sent.items()
        }
    return sent


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
