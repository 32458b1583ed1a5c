"""Which project a watched object's event queues: inside a project's namespaces the labels are
the tenant's to write (its developers may make secrets), so an object there names only the
project whose namespace it sits in — never another tenant's, never a made-up one."""

from __future__ import annotations

from typing import Any

import pytest

from wharf.tenancy.controller import _owner_key


def obj(namespace: str | None, name: str, **labels: str) -> dict[str, Any]:
    keys = {"tenant": "wharf.io/tenant", "project": "wharf.io/project", "env": "wharf.io/env"}
    meta: dict[str, Any] = {"name": name, "labels": {keys[k]: v for k, v in labels.items()}}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"metadata": meta}


@pytest.mark.parametrize(
    ("watched", "key"),
    [
        # Wharf's own: a namespace, the objects in it, the members' identities.
        (obj(None, "acme--shop-dev", tenant="acme", project="shop"), ("acme", "shop")),
        (obj("acme--shop-dev", "pull", tenant="acme", project="shop"), ("acme", "shop")),
        (
            obj("wharf-system", "bob.acme--shop-dev", tenant="acme", project="shop"),
            ("acme", "shop"),
        ),
        # A developer of acme labelling a secret in their own namespace as another tenant's,
        # another project's, or a project that does not exist.
        (obj("acme--shop-dev", "x", tenant="globex", project="p1"), None),
        (obj("acme--shop-dev", "x", tenant="acme", project="billing"), None),
        (obj("acme--shop-dev", "x", tenant="acme", project="made-up-7f3a"), None),
        (obj("acme--shop-dev", "x", tenant="acme"), None),  # a tenant recount, at will
        (obj("default", "x", tenant="acme", project="shop"), None),
        (obj("acme--shop-dev", "x"), None),
    ],
)
def test_an_event_queues_only_the_project_whose_namespace_holds_the_object(
    watched: dict[str, Any], key: tuple[str, str] | None
) -> None:
    assert _owner_key(watched) == key
