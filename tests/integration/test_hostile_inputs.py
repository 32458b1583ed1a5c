"""Every mutating route of the OpenAPI document, fed malformed, oversized, deeply nested and
self-multiplying bodies and hostile names by a caller of each role, against a real server
process on each database: only 4xx answers, nothing stored, memory bounded, and the server
healthy afterwards."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func, select

from tests.integration.conftest import Api, ServerProcess
from wharf.store.tables import api_tokens, memberships, resources, users

PASSWORD = "password-123"
ROLES = {  # user: how it is placed in tenant acme
    "tina": "tenant admin",
    "dev": "developer of project shop",
    "vic": "viewer of the tenant",
    "olga": "no role at all",
}
HOSTILE_NAMES = [
    "../../etc/passwd",
    "x" * 300,
    "🙂",
    "<script>alert(1)</script>",
    "UPPER",
    "..",
    "a b",
    "%2e%2e%2fetc",
]


def alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"x": [value]}
    return value


def manifest(kind: str, name: str, spec: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "tenant": "acme"}, "spec": spec}


# Raw bodies: (content type, bytes). None of them is a valid request for any route.
BODIES: dict[str, tuple[str, bytes]] = {
    "malformed": ("application/json", b'{"kind": "Tenant", "metadata": {'),
    "a list": ("application/json", b"[1, 2, 3]"),
    "wrong types": (
        "application/json",
        json.dumps({"kind": 7, "metadata": "x", "spec": [], "name": {}, "user": []}).encode(),
    ),
    "oversized": ("application/json", b'{"name": "' + b"x" * (2 << 20) + b'"}'),
    "nested past the parser": ("application/json", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
    "nested within the parser": (
        "application/json",
        json.dumps(
            manifest("Application", "deep", {"project": "shop", "values": nested(400)})
        ).encode(),
    ),
    "alias bomb": (
        "application/json",
        json.dumps(
            {
                **manifest("Cluster", "bomb", {"kubeconfig": alias_bomb()}),
                "yaml": alias_bomb(),
                "password": alias_bomb(),
            }
        ).encode(),
    ),
    "NUL": ("application/json", json.dumps(manifest("Tenant", "a\x00b", {})).encode()),
    # Half of a UTF-16 pair is no text: it made the answer (and the row's next read) a 500.
    "lone surrogate": (
        "application/json",
        json.dumps(manifest("Tenant", "nosuch", {"displayName": "a\ud800b"})).encode(),
    ),
    "Infinity": ("application/json", b'{"kind": "Tenant", "spec": {"displayName": Infinity}}'),
    "hostile name": (
        "application/json",
        json.dumps(
            {
                **manifest("Project", "../../etc", {"displayName": "<script>"}),
                "name": "../../etc",
                "user": "../../etc",
                "role": "platform-admin",
                "username": "../x",
                "password": "x",
            }
        ).encode(),
    ),
    "form": ("application/x-www-form-urlencoded", b"name=%00&yaml=" + b"a" * 100),
}


def mutating_routes(openapi: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path)
        for path, item in openapi["paths"].items()
        for method in item
        if method in ("post", "put", "patch", "delete")
    )


def fill(path: str, name: str) -> str:
    """A route's path with its parameters: the real tenant and project, `name` elsewhere."""
    path = path.replace("{tenant}", "acme").replace("{project}", "shop")
    return re.sub(r"\{[^}]+\}", name.replace("/", "%2F"), path)


def counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (resources, users, memberships)
            } | {
                "tokens (not logins)": conn.execute(
                    select(func.count())
                    .select_from(api_tokens)
                    .where(api_tokens.c.name.not_in(["login", "console"]))
                ).scalar_one()
            }
    finally:
        engine.dispose()


def peak_memory_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def test_every_mutating_route_answers_hostile_input_with_4xx_only(tmp_path, database_url):
    with ServerProcess(tmp_path, database_url, WHARF_LOG_LEVEL="warning") as process:
        admin = process.login()
        callers = {"admin": admin}
        for user in ROLES:
            admin.ok("POST", "/api/v1/users", json={"name": user, "password": PASSWORD})
        tenant = {"admins": ["tina"], "viewers": ["vic"]}
        admin.ok("PUT", "/api/v1/tenants/acme", json=manifest("Tenant", "acme", tenant))
        shop = {"members": [{"user": "dev", "role": "developer"}]}
        admin.ok(
            "PUT", "/api/v1/tenants/acme/projects/shop", json=manifest("Project", "shop", shop)
        )
        for user in ROLES:
            token = httpx.post(
                f"{process.url}/api/v1/login", json={"username": user, "password": PASSWORD}
            ).json()["token"]
            callers[user] = Api(httpx.Client(base_url=process.url, timeout=60), token, user)  # type: ignore[arg-type]
        routes = mutating_routes(admin.ok("GET", "/openapi.json"))
        assert len(routes) > 20
        before = counts(database_url)
        assert process.proc is not None
        baseline = peak_memory_kib(process.proc.pid)

        failures = []
        for who, api in callers.items():
            for method, template in routes:
                for body_name, (content_type, body) in BODIES.items():
                    path = fill(template, "nosuch")
                    try:
                        answer = api.request(
                            method, path, content=body, headers={"content-type": content_type}
                        )
                    except httpx.TransportError as exc:
                        failures.append((who, method, path, body_name, repr(exc)))
                        continue
                    if not 400 <= answer.status_code < 500:
                        failures.append((who, method, path, body_name, answer.status_code))
                for name in HOSTILE_NAMES:
                    path = fill(template, name)
                    answer = api.request(method, path, json=manifest("Tenant", name, {}))
                    if not 400 <= answer.status_code < 500:
                        failures.append((who, method, path, name, answer.status_code))
        assert failures == [], "\n".join(map(str, failures))
        assert counts(database_url) == before
        # A few hundred MiB would mean something expanded; the bound is far below that.
        assert peak_memory_kib(process.proc.pid) - baseline < 150 * 1024
        assert httpx.get(f"{process.url}/readyz").status_code == 200
        fine = manifest("Tenant", "after", {"displayName": "After"})
        assert admin.request("PUT", "/api/v1/tenants/after", json=fine).status_code == 201
