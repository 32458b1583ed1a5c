"""PromQL confined to its owner: Wharf puts its own label matchers on every series selector
of a parsed query, and refuses a query that names those labels itself (or uses `or`
matchers, which would read around them), so no text can read another owner's series."""

from __future__ import annotations

from typing import Any

import promql_parser

from wharf.core.errors import InvalidError


def confine(query: str, matchers: dict[str, str], where: str, whose: str) -> str:
    """The query with `matchers` on every selector; refused at `where` when it is not PromQL
    or names one of their labels (`whose`: whose value Wharf adds, for the message)."""
    try:
        parsed = promql_parser.parse(query)
    except (ValueError, TypeError) as exc:
        raise InvalidError(f"{where}: not valid PromQL: {exc}", field=where) from None
    added = ",".join(f'{name}="{_quoted(value)}"' for name, value in matchers.items())

    def scoped(node: Any) -> Any:
        if not isinstance(node, promql_parser.VectorSelector):
            return None
        if node.matchers.or_matchers:
            raise InvalidError(f"{where}: `or` label matchers are not allowed", field=where)
        for m in node.matchers.matchers:
            if m.name in matchers:
                raise InvalidError(
                    f"{where}: {node} names a {m.name}; Wharf adds {whose}", field=where
                )
        text = str(node)
        brace = text.index("{")
        return promql_parser.parse(f"{text[: brace + 1]}{added},{text[brace + 1 :]}")

    return str(promql_parser.transform(parsed, pre_visit=scoped))


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
