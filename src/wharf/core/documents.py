"""YAML read with bounds, for every document a caller hands Wharf (server, console and CLI).

YAML anchors and aliases let a few hundred bytes stand for billions of nodes ("billion
laughs"): PyYAML builds them as shared references, and the first copy, JSON encoding or
validation of the result multiplies them out. An alias may also point at its own parent, which
nothing downstream survives. So a document is refused, before it is turned into Python objects,
when its nodes counted as if every alias were expanded exceed `MAX_NODES` (or their text
`MAX_BYTES`), when it nests deeper
than `MAX_DEPTH`, or when an alias refers to itself.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_NODES = 200_000  # a 1 MiB document of short scalars has about this many
MAX_DEPTH = 64
# Text the document stands for with every alias expanded: one long anchored string used many
# times is few nodes but many bytes once stored or encoded.
MAX_BYTES = 8 * 1024 * 1024


class DocumentTooLarge(yaml.YAMLError):
    """A document over the bounds; a YAMLError, so existing handlers report it as bad YAML."""


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting while composing and large expansions after."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise DocumentTooLarge(f"the document nests deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: Node) -> Any:
        expanded_size(node)
        return super().construct_document(node)


def expanded_size(root: Node) -> int:
    """How many nodes the document has with every alias expanded; DocumentTooLarge over the
    bound or for an alias inside its own anchor. Each shared node is counted once per use but
    visited once (memo), so the count itself costs no more than the document's size."""
    sizes: dict[int, int] = {}
    text: dict[int, int] = {}  # bytes of scalar text under each node, aliases expanded
    open_: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            own = len(node.value) if isinstance(node.value, str) else 0
            text[key] = own + sum(text[id(c)] for c in _children(node))
            if sizes[key] > MAX_NODES:
                raise DocumentTooLarge(
                    f"the document expands to more than {MAX_NODES} nodes (through aliases?)"
                )
            if text[key] > MAX_BYTES:
                raise DocumentTooLarge(
                    f"the document expands to more than {MAX_BYTES} bytes of text "
                    "(through aliases?)"
                )
            continue
        if key in sizes:
            continue
        if key in open_:
            raise DocumentTooLarge("an alias refers to a node that contains it")
        open_.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_:
                raise DocumentTooLarge("an alias refers to a node that contains it")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def nesting(data: Any) -> int:
    """How deeply maps and lists nest in decoded data (JSON bodies); counted without recursion,
    so the count cannot be what overflows."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            stack.extend(
                (child, depth + 1) for child in (node.values() if isinstance(node, dict) else node)
            )
    return deepest


def load(text: str) -> Any:
    """One YAML document, bounded (see the module's docstring)."""
    return yaml.load(text, Loader=BoundedLoader)


def load_all(text: str) -> list[Any]:
    """Every YAML document of a stream, bounded; empty documents are left out."""
    return [d for d in yaml.load_all(text, Loader=BoundedLoader) if d is not None]
