"""Wharf as the token server of two real registries (Debian's docker-registry, CNCF
distribution) on loopback: images built here as OCI layouts and pushed with skopeo under Wharf
credentials; what a caller may not do is refused by the registry itself, from the token
Wharf signed. On SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509

from tests.conftest import fresh_postgres
from tests.integration.conftest import (
    Api,
    RegistryProcess,
    ServerProcess,
    cluster_writes,
    oci_layout,
    register_clusters,
    skopeo,
    wait_for,
)
from wharf.core.crypto import box_for
from wharf.lab import Lab
from wharf.registry.service import TokenSigner

PASSWORD = "password-123"


@dataclass
class Stack:
    server: ServerProcess
    admin: Api
    registries: list[RegistryProcess]
    image: Path
    tenant_a: str
    tenant_b: str
    users: dict[str, str] = field(default_factory=dict)  # role -> user name

    def token(self, user: str, password: str, *scopes: str, service: str = "") -> httpx.Response:
        return httpx.get(
            f"{self.server.url}/api/v1/registry/token",
            params={"service": service or self.registries[0].name, "scope": list(scopes)},
            auth=(user, password),
            timeout=30,
        )


def _user(admin: Api, name: str) -> str:
    admin.ok("POST", "/api/v1/users", json={"name": name, "password": PASSWORD})
    return name


def _registry(admin: Api, registry: RegistryProcess) -> None:
    body = {
        "kind": "Registry",
        "metadata": {"name": registry.name},
        "spec": {"url": registry.url, "service": registry.name, "shared": ["library/"]},
    }
    admin.ok("PUT", f"/api/v1/registries/{registry.name}", json=body)


def _tenant(admin: Api, name: str, members: list[dict[str, str]]) -> None:
    tenant = {"quota": {"cpu": "4", "memory": "8Gi"}, "clusters": ["lab1", "lab2"]}
    admin.ok(
        "PUT",
        f"/api/v1/tenants/{name}",
        json={"kind": "Tenant", "metadata": {"name": name}, "spec": tenant},
    )
    project = {
        "quota": {"cpu": "1", "memory": "1Gi"},
        "members": members,
        "environments": [{"name": "dev", "clusters": ["lab1"]}],
    }
    admin.ok(
        "PUT",
        f"/api/v1/tenants/{name}/projects/proj",
        json={"kind": "Project", "metadata": {"name": "proj"}, "spec": project},
    )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, lab: Lab, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("registry")
    databases = fresh_postgres() if request.param == "postgresql" else nullcontext("")
    with databases as url:
        server = ServerProcess(workdir, url or None, WHARF_LOG_LEVEL="warning")
        registries = [RegistryProcess(workdir, f"reg{i}") for i in (1, 2)]
        server.start()
        try:
            admin = server.login()
            register_clusters(admin, lab)
            bundle = httpx.get(f"{server.url}/api/v1/registry/certificate").json()["certificates"]
            for registry in registries:
                _registry(admin, registry)
                config = admin.ok("GET", f"/api/v1/registries/{registry.name}/config")
                registry.configure(config, bundle)
                registry.start()
            suffix = uuid.uuid4().hex[:6]
            users = {role: _user(admin, f"{role}{suffix}") for role in ("dev", "viewer", "bdev")}
            tenant_a, tenant_b = f"ta{suffix}", f"tb{suffix}"
            _tenant(
                admin,
                tenant_a,
                [
                    {"user": users["dev"], "role": "developer"},
                    {"user": users["viewer"], "role": "viewer"},
                ],
            )
            _tenant(admin, tenant_b, [{"user": users["bdev"], "role": "developer"}])
            image = oci_layout(workdir / "image", b"hello from wharf\n")
            yield Stack(server, admin, registries, image, tenant_a, tenant_b, users)
        finally:
            for registry in registries:
                registry.stop()
            server.stop()


def _push(stack: Stack, user: str, secret: str, repository: str, registry: int = 0) -> Any:
    target = f"docker://{stack.registries[registry].host}/{repository}"
    return skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"--dest-creds={user}:{secret}",
        f"oci:{stack.image}:latest",
        target,
    )


def _inspect(stack: Stack, user: str, secret: str, repository: str, registry: int = 0) -> Any:
    return skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        f"--creds={user}:{secret}",
        f"docker://{stack.registries[registry].host}/{repository}",
    )


def _registry_answer(stack: Stack, token: str, method: str, path: str) -> int:
    url = f"{stack.registries[0].url}/v2/{path}"
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.request(method, url, headers=headers, timeout=30).status_code


# -- Must show 1 -----------------------------------------------------------------------------
def test_a_developer_pushes_and_the_registry_refuses_a_viewer_and_another_tenant(
    stack: Stack,
) -> None:
    repo = f"{stack.tenant_a}/proj/app:v1"
    pushed = _push(stack, stack.users["dev"], PASSWORD, repo)
    assert pushed.returncode == 0, pushed.stderr
    assert _inspect(stack, stack.users["viewer"], PASSWORD, repo).returncode == 0

    # The viewer's push: Wharf signs a token without push, and the registry refuses.
    refused = _push(stack, stack.users["viewer"], PASSWORD, f"{stack.tenant_a}/proj/app:v2")
    assert refused.returncode != 0
    assert "denied" in refused.stderr or "unauthorized" in refused.stderr.lower()
    scope = f"repository:{stack.tenant_a}/proj/app:pull,push"
    answer = stack.token(stack.users["viewer"], PASSWORD, scope)
    assert answer.status_code == 200, answer.text
    token = answer.json()["token"]
    assert jwt.decode(token, options={"verify_signature": False})["access"] == [
        {"type": "repository", "name": f"{stack.tenant_a}/proj/app", "actions": ["pull"]}
    ]
    upload = f"{stack.tenant_a}/proj/app/blobs/uploads/"
    assert _registry_answer(stack, token, "POST", upload) == 401

    # Tenant B's developer: a token for nothing, and the registry refuses the pull.
    assert _inspect(stack, stack.users["bdev"], PASSWORD, repo).returncode != 0
    theirs = stack.token(stack.users["bdev"], PASSWORD, scope).json()["token"]
    assert jwt.decode(theirs, options={"verify_signature": False})["access"][0]["actions"] == []
    tags = f"{stack.tenant_a}/proj/app/tags/list"
    assert _registry_answer(stack, theirs, "GET", tags) == 401
    mine = stack.token(stack.users["dev"], PASSWORD, scope).json()["token"]
    assert _registry_answer(stack, mine, "GET", tags) == 200


def test_tokens_carry_the_claims_distribution_checks(stack: Stack) -> None:
    scope = f"repository:{stack.tenant_a}/proj/app:pull"
    body = stack.token(stack.users["dev"], PASSWORD, scope).json()
    header = jwt.get_unverified_header(body["token"])
    bundle = httpx.get(f"{stack.server.url}/api/v1/registry/certificate").json()["certificates"]
    cert = x509.load_pem_x509_certificates(bundle.encode())[0]
    claims = jwt.decode(
        body["token"], cert.public_key(), algorithms=["ES256"], audience=stack.registries[0].name
    )  # type: ignore[arg-type]
    assert header["alg"] == "ES256"
    assert header["kid"].count(":") == 11
    assert claims["iss"] == "wharf"
    assert claims["sub"] == stack.users["dev"]
    assert claims["exp"] - claims["iat"] == body["expires_in"] >= 60
    assert {"nbf", "jti"} <= set(claims)


def test_an_api_token_and_a_stolen_read_only_token(stack: Stack) -> None:
    dev = httpx.post(
        f"{stack.server.url}/api/v1/login",
        json={"username": stack.users["dev"], "password": PASSWORD},
    ).json()["token"]
    read_only = httpx.post(
        f"{stack.server.url}/api/v1/tokens",
        headers={"Authorization": f"Bearer {dev}"},
        json={"name": "ci-read", "readOnly": True, "expiresIn": 600},
    ).json()["token"]
    repo = f"{stack.tenant_a}/proj/tokens:v1"
    assert _push(stack, stack.users["dev"], dev, repo).returncode == 0
    assert _push(stack, stack.users["dev"], read_only, f"{repo}-2").returncode != 0
    assert _inspect(stack, stack.users["dev"], read_only, repo).returncode == 0
    # A token is only good with its own user's name.
    assert stack.token(stack.users["viewer"], dev, "registry:catalog:*").status_code == 401


def _forged(claims: dict[str, Any]) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "AAAA:BBBB"})


def test_foreign_and_expired_tokens_are_refused_by_the_registry(stack: Stack) -> None:
    now = int(dt.datetime.now(dt.UTC).timestamp())
    name = f"{stack.tenant_a}/proj/app"
    claims = {
        "iss": "wharf",
        "sub": "mallory",
        "aud": stack.registries[0].name,
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "jti": "x",
        "access": [{"type": "repository", "name": name, "actions": ["pull", "push"]}],
    }
    assert _registry_answer(stack, _forged(claims), "GET", f"{name}/tags/list") == 401
    # Wharf's own key (the server's passphrase), but expired beyond distribution's leeway.
    box = box_for("integration-test-key", Path("/nonexistent"))
    key = TokenSigner(box, "wharf", 300)
    expired = {**claims, "exp": now - 3600, "nbf": now - 7200, "iat": now - 7200}
    old = jwt.encode(expired, key.keys[0], algorithm="ES256", headers={"kid": key.kid})
    assert _registry_answer(stack, old, "GET", f"{name}/tags/list") == 401
    fresh = jwt.encode(claims, key.keys[0], algorithm="ES256", headers={"kid": key.kid})
    # The same claims, fresh: let through (200, or 404 when run before anything was pushed).
    assert _registry_answer(stack, fresh, "GET", f"{name}/tags/list") in (200, 404)
    # A real token of registry 1 is not good at registry 2 (its audience).
    real = stack.token(stack.users["dev"], PASSWORD, f"repository:{name}:pull").json()["token"]
    url = f"{stack.registries[1].url}/v2/{name}/tags/list"
    answer = httpx.get(url, headers={"Authorization": f"Bearer {real}"}, timeout=30)
    assert answer.status_code == 401


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"service": "nowhere", "scope": "repository:a/b/c:pull"}, "service"),
        ({"scope": "repository:a/b/c:pull"}, "service"),
        ({"service": "reg1", "scope": "repository:../b/c:pull"}, "scope"),
        ({"service": "reg1", "scope": "repository:A/b/c:pull"}, "scope"),
        ({"service": "reg1", "scope": "repository:a/b/c:pull:push"}, "scope"),
    ],
)
def test_bad_token_requests_are_4xx_naming_the_field(
    stack: Stack, params: dict[str, str], field: str
) -> None:
    answer = httpx.get(
        f"{stack.server.url}/api/v1/registry/token",
        params=params,
        auth=(stack.users["dev"], PASSWORD),
        timeout=30,
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field


def test_scopes_crafted_to_leave_the_tenant_get_nothing(stack: Stack) -> None:
    a, b = stack.tenant_a, stack.tenant_b
    for name in (f"{b}/proj/app", f"{a}--x/proj/app", f"{a}x/proj/app", f"{a}/other/app"):
        answer = stack.token(stack.users["dev"], PASSWORD, f"repository:{name}:pull,push")
        assert answer.status_code == 200, answer.text
        claims = jwt.decode(answer.json()["token"], options={"verify_signature": False})
        assert claims["access"][0]["actions"] == [], name


def test_wrong_credentials_are_throttled(stack: Stack) -> None:
    user = f"ghost{uuid.uuid4().hex[:6]}"  # nobody's name: the others' logins stay free
    answers = [stack.token(user, "wrong-password", "registry:catalog:*") for _ in range(5)]
    assert [a.status_code for a in answers] == [401] * 5
    # From now on each failure locks the name for twice as long: a 429 comes, however slow
    # the machine is between two attempts.
    for _ in range(12):
        answer = stack.token(user, "wrong-password", "registry:catalog:*")
        if answer.status_code == 429:
            break
    assert answer.status_code == 429
    assert "Retry-After" in answer.headers


def _decode_secret(data: dict[str, Any]) -> dict[str, Any]:
    raw = base64.b64decode(data[".dockerconfigjson"])
    config: dict[str, Any] = json.loads(raw)
    return config


def _cluster_secret(kubectl: Any, lab: Lab, namespace: str) -> dict[str, Any] | None:
    run = kubectl(
        lab.clusters()[0],
        "-n",
        namespace,
        "get",
        "secret",
        "wharf-registry",
        "-o",
        "json",
        check=False,
    )
    found: dict[str, Any] | None = json.loads(run.stdout) if run.returncode == 0 else None
    return found


def _secret_writes(lab: Lab, namespace: str) -> int:
    writes = cluster_writes(lab.clusters()[0], namespace)
    return sum(1 for e in writes if e.get("objectRef", {}).get("resource") == "secrets")


# -- Must show 5 -----------------------------------------------------------------------------
def test_clusters_pull_with_the_secret_wharf_placed_in_the_namespace(
    stack: Stack, kubectl: Any, lab: Lab
) -> None:
    a, b = stack.tenant_a, stack.tenant_b
    namespace = f"{a}--proj-dev"
    secret = wait_for(lambda: _cluster_secret(kubectl, lab, namespace), what="pull secret")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "wharf"
    auths = _decode_secret(secret["data"])["auths"]
    assert set(auths) == {r.host for r in stack.registries}
    entry = auths[stack.registries[0].host]
    assert base64.b64decode(entry["auth"]).decode() == f"{entry['username']}:{entry['password']}"
    assert _push(stack, stack.users["dev"], PASSWORD, f"{a}/proj/pulled:v1").returncode == 0

    pulled = _inspect(stack, entry["username"], entry["password"], f"{a}/proj/pulled:v1")
    assert pulled.returncode == 0, pulled.stderr
    # The clusters' identity pulls; it never pushes, nor reads another tenant's images.
    pushed = _push(stack, entry["username"], entry["password"], f"{a}/proj/pulled:v2")
    assert pushed.returncode != 0
    theirs = wait_for(lambda: _cluster_secret(kubectl, lab, f"{b}--proj-dev"), what="B's secret")
    b_entry = _decode_secret(theirs["data"])["auths"][stack.registries[0].host]
    assert b_entry["password"] != entry["password"]
    assert (
        _inspect(stack, b_entry["username"], b_entry["password"], f"{a}/proj/pulled:v1").returncode
        != 0
    )

    # A reconcile that finds the Secret in place writes nothing to it.
    before, version = _secret_writes(lab, namespace), secret["metadata"]["resourceVersion"]
    path = f"/api/v1/tenants/{a}/projects/proj"
    project = stack.admin.ok("GET", path)
    project["spec"]["displayName"] = "moved"
    body = {"kind": "Project", "metadata": {"name": "proj"}, "spec": project["spec"]}
    generation = stack.admin.ok("PUT", path, json=body)["metadata"]["generation"]
    wait_for(
        lambda: stack.admin.ok("GET", path)["status"].get("observedGeneration") == generation,
        what="project reconciled",
    )
    again = _cluster_secret(kubectl, lab, namespace)
    assert again is not None
    assert again["metadata"]["resourceVersion"] == version
    assert _secret_writes(lab, namespace) == before


def _robot(stack: Stack, name: str, project: str = "proj", **spec: Any) -> dict[str, Any]:
    body = {
        "kind": "Robot",
        "metadata": {"name": name},
        "spec": {"project": project, **spec},
    }
    return stack.admin.ok("PUT", f"/api/v1/tenants/{stack.tenant_a}/robots/{name}", json=body)


def test_robots_push_to_their_project_only_until_they_expire(stack: Stack) -> None:
    a = stack.tenant_a
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    _robot(stack, "ci", access=["pull", "push"], expiresAt=later)
    login = stack.admin.ok("GET", f"/api/v1/tenants/{a}/robots/ci/secret")
    assert login["username"] == f"robot${a}+ci"
    assert _push(stack, login["username"], login["secret"], f"{a}/proj/robot:v1").returncode == 0
    # A robot of project proj asks for project other: nothing.
    scope = f"repository:{a}/other/app:pull,push"
    answer = stack.token(login["username"], login["secret"], scope)
    assert (
        jwt.decode(answer.json()["token"], options={"verify_signature": False})["access"][0][
            "actions"
        ]
        == []
    )
    assert _push(stack, login["username"], login["secret"], f"{a}/other/app:v1").returncode != 0
    # Only the project's admins read a robot's secret; other tenants do not learn it exists.
    viewer = httpx.post(
        f"{stack.server.url}/api/v1/login",
        json={"username": stack.users["viewer"], "password": PASSWORD},
    ).json()["token"]
    refused = httpx.get(
        f"{stack.server.url}/api/v1/tenants/{a}/robots/ci/secret",
        headers={"Authorization": f"Bearer {viewer}"},
    )
    assert refused.status_code == 403
    # Expired: its secret no longer opens anything.
    earlier = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    _robot(stack, "ci", access=["pull", "push"], expiresAt=earlier)
    assert stack.token(login["username"], login["secret"], scope).status_code == 401


# -- Must show 2 (first half) ------------------------------------------------------------------
def test_a_push_is_in_the_audit_trail_with_its_actor_and_in_the_projects_images(
    stack: Stack,
) -> None:
    a = stack.tenant_a
    assert _push(stack, stack.users["dev"], PASSWORD, f"{a}/proj/audited:v7").returncode == 0

    def pushed() -> list[dict[str, Any]]:
        params = {"tenant": a, "kind": "Image", "action": "push", "name": "audited:v7"}
        return stack.admin.ok("GET", "/api/v1/audit", params=params)["items"]  # type: ignore[no-any-return]

    [event] = wait_for(pushed, what="the push in the audit trail")
    assert event["actor"] == stack.users["dev"]
    assert event["project"] == "proj"

    viewer = httpx.post(
        f"{stack.server.url}/api/v1/login",
        json={"username": stack.users["viewer"], "password": PASSWORD},
    ).json()["token"]
    listed = httpx.get(
        f"{stack.server.url}/api/v1/tenants/{a}/projects/proj/images",
        headers={"Authorization": f"Bearer {viewer}"},
        timeout=60,
    ).json()
    assert listed["unreachable"] == [], listed
    [image] = [i for i in listed["items"] if i["image"] == "audited"]
    [tag] = image["tags"]
    assert tag["tag"] == "v7"
    assert tag["digest"].startswith("sha256:")
    assert tag["pushedBy"] == stack.users["dev"]
    assert listed["unreachable"] == []
    # The same through the CLI, as the viewer.
    env = {**os.environ, "WHARF_SERVER": stack.server.url, "WHARF_TOKEN": viewer}
    shown = subprocess.run(
        [sys.executable, "-m", "wharf", "images", "-t", a, "-p", "proj"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    [line] = [x for x in shown.stdout.splitlines() if " audited " in x]
    assert line.split()[:3] == ["reg1", "audited", "v7"]
    assert stack.users["dev"] in line


def test_notifications_need_the_registrys_secret(stack: Stack) -> None:
    event = {
        "action": "push",
        "target": {
            "repository": f"{stack.tenant_a}/proj/forged",
            "tag": "v1",
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:00",
        },
        "actor": {"name": "mallory"},
    }
    answer = httpx.post(
        f"{stack.server.url}/api/v1/registries/reg1/events",
        headers={"Authorization": "Bearer forged"},
        json={"events": [event]},
    )
    assert answer.status_code == 401
    params = {"kind": "Image", "actor": "mallory"}
    assert stack.admin.ok("GET", "/api/v1/audit", params=params)["items"] == []


# -- Must show 3 -----------------------------------------------------------------------------
def test_retention_deletes_exactly_the_expected_tags_and_never_a_used_one(
    stack: Stack, tmp_path: Path
) -> None:
    a, host = stack.tenant_a, stack.registries[0].host
    pushed_order = ["release-1", "v1", "v2", "v3", "v4", "v5"]
    for tag in pushed_order:
        layout = oci_layout(tmp_path / tag, f"retention {tag}\n".encode())
        target = f"docker://{host}/{a}/proj/ret:{tag}"
        copied = skopeo(
            "copy",
            "--dest-tls-verify=false",
            f"--dest-creds={stack.users['dev']}:{PASSWORD}",
            f"oci:{layout}:latest",
            target,
        )
        assert copied.returncode == 0, copied.stderr

    def recorded() -> bool:
        params = {"tenant": a, "kind": "Image", "action": "push", "limit": 500}
        names = {e["name"] for e in stack.admin.ok("GET", "/api/v1/audit", params=params)["items"]}
        return {f"ret:{t}" for t in pushed_order} <= names

    wait_for(recorded, what="every push in the audit trail (their order decides)")
    # A delivered application uses v1.
    app = {
        "kind": "Application",
        "metadata": {"name": "uses-v1"},
        "spec": {
            "project": "proj",
            "environment": "dev",
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": "uses-v1", "image": f"{host}/{a}/proj/ret:v1", "replicas": 1},
        },
    }
    stack.admin.ok("PUT", f"/api/v1/tenants/{a}/applications/uses-v1", json=app)
    policy = {
        "kind": "RetentionPolicy",
        "metadata": {"name": "tidy"},
        "spec": {
            "project": "proj",
            "repositories": ["ret"],
            "keepLast": 2,
            "keepTags": ["release-.*"],
        },
    }
    stack.admin.ok("PUT", f"/api/v1/tenants/{a}/retentionpolicies/tidy", json=policy)

    # The expectation, computed from the rules: the 2 newest, release-*, and the used v1 stay.
    newest = set(pushed_order[-2:])
    expected = {
        t for t in pushed_order if t not in newest and not t.startswith("release-") and t != "v1"
    }
    assert expected == {"v2", "v3"}
    run = f"/api/v1/tenants/{a}/retentionpolicies/tidy/run"
    report = stack.admin.ok("POST", run, params={"dryRun": "true"})
    mine = [d for d in report["decisions"] if d["registry"] == "reg1"]
    assert {d["tag"] for d in mine if d["action"] == "delete"} == expected
    assert {d["tag"]: d["reason"] for d in mine}["v1"] == "used by a delivered application revision"

    def tags() -> set[str]:
        token = stack.token(stack.users["dev"], PASSWORD, f"repository:{a}/proj/ret:pull")
        return set(
            httpx.get(
                f"{stack.registries[0].url}/v2/{a}/proj/ret/tags/list",
                headers={"Authorization": f"Bearer {token.json()['token']}"},
            ).json()["tags"]
        )

    assert tags() == set(pushed_order)  # a dry run deletes nothing
    report = stack.admin.ok("POST", run, params={"dryRun": "false"})
    assert report["dryRun"] is False
    assert tags() == set(pushed_order) - expected
    deletions = stack.admin.ok(
        "GET", "/api/v1/audit", params={"tenant": a, "action": "retention-delete"}
    )["items"]
    assert {e["name"] for e in deletions} == {f"ret:{t}" for t in expected}


def test_a_retention_pattern_that_does_not_compile_is_a_422(stack: Stack) -> None:
    a = stack.tenant_a
    policy = {
        "kind": "RetentionPolicy",
        "metadata": {"name": "broken"},
        "spec": {"project": "proj", "keepTags": ["ok", "release-(["]},
    }
    answer = stack.admin.request(
        "PUT", f"/api/v1/tenants/{a}/retentionpolicies/broken", json=policy
    )
    assert answer.status_code == 422
    assert answer.json()["field"] == "spec.keepTags[1]"
    assert (
        stack.admin.request("GET", f"/api/v1/tenants/{a}/retentionpolicies/broken").status_code
        == 404
    )


def _digest(stack: Stack, repository: str, tag: str) -> str:
    token = stack.token(stack.users["dev"], PASSWORD, f"repository:{repository}:pull")
    answer = httpx.head(
        f"{stack.registries[0].url}/v2/{repository}/manifests/{tag}",
        headers={
            "Authorization": f"Bearer {token.json()['token']}",
            "Accept": "application/vnd.oci.image.manifest.v1+json",
        },
    )
    return answer.headers.get("Docker-Content-Digest", "")


def test_an_immutable_tag_moved_by_a_push_is_restored_and_reported(
    stack: Stack, tmp_path: Path
) -> None:
    a, host = stack.tenant_a, stack.registries[0].host
    rule = {
        "kind": "ImmutableTags",
        "metadata": {"name": "releases"},
        "spec": {"project": "proj", "tags": [r"[0-9]+\.[0-9]+"]},
    }
    stack.admin.ok("PUT", f"/api/v1/tenants/{a}/immutabletags/releases", json=rule)
    repository = f"{a}/proj/imm"

    def push(tag: str, content: bytes) -> None:
        layout = oci_layout(tmp_path / f"{tag}-{len(content)}", content)
        copied = skopeo(
            "copy",
            "--dest-tls-verify=false",
            f"--dest-creds={stack.users['dev']}:{PASSWORD}",
            f"oci:{layout}:latest",
            f"docker://{host}/{repository}:{tag}",
        )
        assert copied.returncode == 0, copied.stderr

    def pushes(name: str) -> int:
        params = {"tenant": a, "kind": "Image", "action": "push", "name": name}
        return len(stack.admin.ok("GET", "/api/v1/audit", params=params)["items"])

    push("1.0", b"first\n")
    push("dev", b"first\n")
    wait_for(lambda: pushes("imm:1.0") and pushes("imm:dev"), what="first pushes recorded")
    first = _digest(stack, repository, "1.0")
    push("dev", b"second, longer\n")  # not immutable: moves freely
    push("1.0", b"second, longer\n")
    second = _digest(stack, repository, "dev")
    assert second != first
    wait_for(lambda: _digest(stack, repository, "1.0") == first, what="1.0 restored")
    assert _digest(stack, repository, "dev") == second

    params = {"tenant": a, "action": "restore-immutable"}
    [event] = stack.admin.ok("GET", "/api/v1/audit", params=params)["items"]
    assert event["actor"] == stack.users["dev"]
    assert event["name"] == "imm:1.0"
    assert "matches immutable pattern" in event["reason"]
    bad = {**rule, "metadata": {"name": "bad"}, "spec": {"project": "proj", "tags": ["(["]}}
    answer = stack.admin.request("PUT", f"/api/v1/tenants/{a}/immutabletags/bad", json=bad)
    assert answer.status_code == 422
    assert answer.json()["field"] == "spec.tags[0]"


def test_an_immutable_tag_is_not_unlocked_by_a_push_to_another_registry(
    stack: Stack, tmp_path: Path
) -> None:
    """A push of the tag's new digest to the second registry is not the tag's last digest in
    the first: the first registry's tag still goes back."""
    a = stack.tenant_a
    rule = {
        "kind": "ImmutableTags",
        "metadata": {"name": "elsewhere"},
        "spec": {"project": "proj", "tags": [r"[0-9]+\.[0-9]+"], "repositories": ["immx"]},
    }
    path = f"/api/v1/tenants/{a}/immutabletags/elsewhere"
    stack.admin.ok("PUT", path, json=rule)
    repository = f"{a}/proj/immx"

    def push(registry: int, content: bytes) -> None:
        layout = oci_layout(tmp_path / uuid.uuid4().hex[:8], content)
        copied = skopeo(
            "copy",
            "--dest-tls-verify=false",
            f"--dest-creds={stack.users['dev']}:{PASSWORD}",
            f"oci:{layout}:latest",
            f"docker://{stack.registries[registry].host}/{repository}:1.0",
        )
        assert copied.returncode == 0, copied.stderr

    def pushes() -> int:
        params = {"tenant": a, "kind": "Image", "action": "push", "name": "immx:1.0"}
        return len(stack.admin.ok("GET", "/api/v1/audit", params=params)["items"])

    try:
        push(0, b"first\n")
        wait_for(lambda: pushes() == 1, what="first push recorded")
        first = _digest(stack, repository, "1.0")
        push(1, b"second, longer\n")
        wait_for(lambda: pushes() >= 2, what="push to the second registry recorded")
        push(0, b"second, longer\n")
        wait_for(lambda: _digest(stack, repository, "1.0") == first, what="1.0 restored")
    finally:
        stack.admin.ok("DELETE", path, params={"confirm": "elsewhere"})


def _tags_at(stack: Stack, registry: int, repository: str) -> set[str]:
    service = stack.registries[registry].name
    scope = f"repository:{repository}:pull"
    token = stack.token(stack.users["dev"], PASSWORD, scope, service=service).json()["token"]
    answer = httpx.get(
        f"{stack.registries[registry].url}/v2/{repository}/tags/list",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    return set(answer.json().get("tags") or []) if answer.status_code == 200 else set()


# -- Must show 2 (second half) ---------------------------------------------------------------
def test_a_push_is_replicated_and_a_killed_wharf_finishes_the_copy(
    stack: Stack, tmp_path: Path
) -> None:
    a = stack.tenant_a
    repository = f"{a}/proj/rep"
    rule = {
        "kind": "ReplicationRule",
        "metadata": {"name": "mirror"},
        "spec": {"project": "proj", "source": "reg1", "target": "reg2", "repositories": ["rep"]},
    }
    path = f"/api/v1/tenants/{a}/replicationrules/mirror"
    stack.admin.ok("PUT", path, json=rule)
    assert _push(stack, stack.users["dev"], PASSWORD, f"{repository}:v1").returncode == 0
    wait_for(lambda: "v1" in _tags_at(stack, 1, repository), what="v1 replicated to reg2")

    # The target is down: the copy of v2 stays pending, with why.
    target = stack.registries[1]
    target.stop()
    layout = oci_layout(tmp_path / "v2", b"replicated v2\n")
    copied = skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"--dest-creds={stack.users['dev']}:{PASSWORD}",
        f"oci:{layout}:latest",
        f"docker://{stack.registries[0].host}/{repository}:v2",
    )
    assert copied.returncode == 0, copied.stderr

    def failing() -> bool:
        status = stack.admin.ok("GET", path)["status"]
        pending = [p["tag"] for p in status.get("pending", [])]
        return pending == ["v2"] and "v2" in status.get("lastError", "")

    wait_for(failing, what="v2 pending after a failed copy")
    # Kill Wharf mid-replication, bring the target back, restart: the copy is finished.
    stack.server.kill()
    target.start()
    stack.server.start()
    wait_for(lambda: "v2" in _tags_at(stack, 1, repository), what="v2 replicated after restart")
    status = wait_for(
        lambda: (s := stack.admin.ok("GET", path)["status"]).get("pending") == [] and s,
        what="nothing pending",
    )
    assert [h["tag"] for h in status["history"]] == ["v1", "v2"]
    assert status["lastError"] == ""


def test_a_replication_rule_to_an_unknown_registry_is_a_422(stack: Stack) -> None:
    rule = {
        "kind": "ReplicationRule",
        "metadata": {"name": "nowhere"},
        "spec": {"project": "proj", "source": "reg1", "target": "nowhere"},
    }
    path = f"/api/v1/tenants/{stack.tenant_a}/replicationrules/nowhere"
    answer = stack.admin.request("PUT", path, json=rule)
    assert answer.status_code == 422
    assert answer.json()["field"] == "spec.target"
    assert stack.admin.request("GET", path).status_code == 404


# -- Delivery checks -----------------------------------------------------------------------------
def _login(stack: Stack, user: str) -> Api:
    token = httpx.post(
        f"{stack.server.url}/api/v1/login",
        json={"username": user, "password": PASSWORD},
        timeout=60,  # a password sign-in is an argon2 check: slow on a loaded machine
    ).json()["token"]
    client = httpx.Client(base_url=stack.server.url, timeout=60)
    return Api(client, token, user)  # type: ignore[arg-type]


def _application(name: str, image: str) -> dict[str, Any]:
    return {
        "kind": "Application",
        "metadata": {"name": name},
        "spec": {
            "project": "proj",
            "environment": "dev",
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": name, "image": image, "replicas": 1},
        },
    }


def _deliver(api: Api, tenant: str, name: str, image: str) -> httpx.Response:
    path = f"/api/v1/tenants/{tenant}/applications/{name}"
    return api.request("PUT", path, json=_application(name, image))


def _push_content(stack: Stack, tmp_path: Path, repository: str, content: bytes) -> str:
    """Push a one-file image built here; its digest."""
    layout = oci_layout(tmp_path / uuid.uuid4().hex[:8], content)
    copied = skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"--dest-creds={stack.users['dev']}:{PASSWORD}",
        f"oci:{layout}:latest",
        f"docker://{stack.registries[0].host}/{repository}",
    )
    assert copied.returncode == 0, copied.stderr
    name, _, tag = repository.rpartition(":")
    return _digest(stack, name, tag)


def test_an_image_missing_or_not_pullable_is_refused_alike_before_anything_is_applied(
    stack: Stack, tmp_path: Path
) -> None:
    a, b, host = stack.tenant_a, stack.tenant_b, stack.registries[0].host
    _push_content(stack, tmp_path, f"{a}/proj/chk:v1", b"delivery check\n")
    dev, bdev = _login(stack, stack.users["dev"]), _login(stack, stack.users["bdev"])

    missing = _deliver(dev, a, "chk-missing", f"{host}/{a}/proj/chk:v9")
    assert missing.status_code == 422, missing.text
    assert missing.json()["field"] == "spec.values.image"
    assert dev.request("GET", f"/api/v1/tenants/{a}/applications/chk-missing").status_code == 404

    # Tenant B names A's image, which exists, and one that does not: the same answer.
    theirs = _deliver(bdev, b, "chk", f"{host}/{a}/proj/chk:v1")
    absent = _deliver(bdev, b, "chk", f"{host}/{a}/proj/chk:v9")
    assert theirs.status_code == absent.status_code == 422
    assert theirs.json()["field"] == absent.json()["field"] == "spec.values.image"
    assert theirs.json()["message"].replace(":v1", ":v9") == absent.json()["message"]
    assert bdev.request("GET", f"/api/v1/tenants/{b}/applications/chk").status_code == 404

    # A's developer delivers the image that is there; a registry Wharf does not know passes.
    assert _deliver(dev, a, "chk", f"{host}/{a}/proj/chk:v1").status_code in (200, 201)
    elsewhere = _deliver(dev, a, "chk-elsewhere", "registry.invalid/team/app:1.0")
    assert elsewhere.status_code in (200, 201), elsewhere.text
    for name in ("chk", "chk-elsewhere"):
        dev.ok("DELETE", f"/api/v1/tenants/{a}/applications/{name}", params={"confirm": name})


# -- Must show 4 -----------------------------------------------------------------------------
def _key_pair(cosign: Any, where: Path) -> Path:
    where.mkdir()
    made = cosign("generate-key-pair", cwd=where, COSIGN_PASSWORD="key-password")
    assert made.returncode == 0, made.stderr
    return where


def _sign(cosign: Any, stack: Stack, keys: Path, image: str) -> None:
    signed = cosign(
        "sign",
        "--key",
        str(keys / "cosign.key"),
        "--tlog-upload=false",
        "--allow-http-registry",
        "--registry-username",
        stack.users["dev"],
        "--registry-password",
        PASSWORD,
        image,
        COSIGN_PASSWORD="key-password",
    )
    assert signed.returncode == 0, signed.stderr


def _signature_policy(keys: Path) -> dict[str, Any]:
    key = {"name": "release", "publicKey": (keys / "cosign.pub").read_text()}
    return {
        "kind": "SignaturePolicy",
        "metadata": {"name": "signed"},
        "spec": {"project": "proj", "keys": [key]},
    }


def _move_signature(stack: Stack, repository: str, signed: str, other: str) -> None:
    """Put the signature of one image under another image's signature tag (a replay)."""
    token = stack.token(stack.users["dev"], PASSWORD, f"repository:{repository}:pull,push")
    headers = {"Authorization": f"Bearer {token.json()['token']}"}
    base = f"{stack.registries[0].url}/v2/{repository}/manifests"
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    manifest = httpx.get(f"{base}/{signed.replace(':', '-')}.sig", headers={**headers, **accept})
    manifest.raise_for_status()
    put = httpx.put(
        f"{base}/{other.replace(':', '-')}.sig",
        content=manifest.content,
        headers={**headers, "Content-Type": manifest.headers["Content-Type"]},
    )
    put.raise_for_status()


def test_a_project_requiring_signatures_refuses_unsigned_and_wrongly_signed_images(
    stack: Stack, tmp_path: Path, cosign: Any
) -> None:
    a, host = stack.tenant_a, stack.registries[0].host
    repository = f"{a}/proj/sig"
    good, other = _key_pair(cosign, tmp_path / "good"), _key_pair(cosign, tmp_path / "other")
    digests = {
        tag: _push_content(stack, tmp_path, f"{repository}:{tag}", f"sig {tag}\n".encode())
        for tag in ("signed", "unsigned", "wrongkey", "replayed")
    }
    _sign(cosign, stack, good, f"{host}/{repository}@{digests['signed']}")
    _sign(cosign, stack, other, f"{host}/{repository}@{digests['wrongkey']}")
    _move_signature(stack, repository, digests["signed"], digests["replayed"])

    dev = _login(stack, stack.users["dev"])
    policy = f"/api/v1/tenants/{a}/signaturepolicies/signed"
    # Developers may not set (or weaken) the requirement; the tenant's admins do.
    assert dev.request("PUT", policy, json=_signature_policy(other)).status_code == 403
    stack.admin.ok("PUT", policy, json=_signature_policy(good))
    try:
        assert dev.ok("GET", policy)["spec"]["keys"][0]["name"] == "release"
        assert dev.request("PUT", policy, json=_signature_policy(other)).status_code == 403
        assert dev.request("DELETE", policy, params={"confirm": "signed"}).status_code == 403
        bdev = _login(stack, stack.users["bdev"])
        assert bdev.request("GET", policy).status_code == 404

        reasons = {
            "unsigned": "it is not signed",
            "wrongkey": "not signed by any of the project's keys",
            "replayed": f"for another image ({digests['signed']})",
        }
        for tag, reason in reasons.items():
            answer = _deliver(dev, a, f"sig-{tag}", f"{host}/{repository}:{tag}@{digests[tag]}")
            assert answer.status_code == 422, answer.text
            assert answer.json()["field"] == "spec.values.image"
            assert reason in answer.json()["message"], answer.text
            path = f"/api/v1/tenants/{a}/applications/sig-{tag}"
            assert dev.request("GET", path).status_code == 404
        # Signatures are checked in registered registries only: elsewhere is refused.
        elsewhere = _deliver(dev, a, "sig-elsewhere", "registry.invalid/team/app:1.0")
        assert elsewhere.status_code == 422
        assert "not on a registered registry" in elsewhere.json()["message"]

        # A tag checked now can be moved to an unsigned image later: digests only.
        by_tag = _deliver(dev, a, "sig-signed", f"{host}/{repository}:signed")
        assert by_tag.status_code == 422, by_tag.text
        assert by_tag.json()["field"] == "spec.values.image"
        assert "by digest" in by_tag.json()["message"]

        pinned = f"{host}/{repository}:signed@{digests['signed']}"
        delivered = _deliver(dev, a, "sig-signed", pinned)
        assert delivered.status_code in (200, 201), delivered.text
        dev.ok(
            "DELETE",
            f"/api/v1/tenants/{a}/applications/sig-signed",
            params={"confirm": "sig-signed"},
        )
    finally:
        stack.admin.ok("DELETE", policy, params={"confirm": "signed"})


def _upload_blob(stack: Stack, repository: str, data: bytes) -> dict[str, Any]:
    token = stack.token(stack.users["dev"], PASSWORD, f"repository:{repository}:pull,push")
    headers = {"Authorization": f"Bearer {token.json()['token']}"}
    base = f"{stack.registries[0].url}/v2/{repository}/blobs"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = httpx.post(f"{base}/uploads/", headers=headers)
    started.raise_for_status()
    location = started.headers["Location"]
    location = location if location.startswith("http") else stack.registries[0].url + location
    separator = "&" if "?" in location else "?"
    httpx.put(
        f"{location}{separator}digest={digest}",
        content=data,
        headers={**headers, "Content-Type": "application/octet-stream"},
    ).raise_for_status()
    return {"digest": digest, "size": len(data)}


def _hostile_signature(stack: Stack, repository: str, digest: str, layers: int, size: int) -> None:
    """A signature tag a developer pushed by hand: `layers` simple-signing layers, each a
    `size`-byte payload."""
    config = _upload_blob(stack, repository, b"{}")
    payload = _upload_blob(stack, repository, b"x" * size)
    layer = {
        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
        **payload,
        "annotations": {"dev.cosignproject.cosign/signature": "AAAA"},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [layer] * layers,
    }
    token = stack.token(stack.users["dev"], PASSWORD, f"repository:{repository}:pull,push")
    httpx.put(
        f"{stack.registries[0].url}/v2/{repository}/manifests/{digest.replace(':', '-')}.sig",
        content=json.dumps(manifest).encode(),
        headers={
            "Authorization": f"Bearer {token.json()['token']}",
            "Content-Type": "application/vnd.oci.image.manifest.v1+json",
        },
    ).raise_for_status()


def test_a_hostile_signature_tag_is_read_within_bounds(
    stack: Stack, tmp_path: Path, cosign: Any
) -> None:
    """A developer cannot make Wharf download big payloads, nor many, to check a delivery."""
    a, host = stack.tenant_a, stack.registries[0].host
    repository = f"{a}/proj/hostile"
    big = _push_content(stack, tmp_path, f"{repository}:big", b"big\n")
    many = _push_content(stack, tmp_path, f"{repository}:many", b"many\n")
    _hostile_signature(stack, repository, big, layers=1, size=200_000)
    _hostile_signature(stack, repository, many, layers=60, size=10)
    policy = f"/api/v1/tenants/{a}/signaturepolicies/signed"
    stack.admin.ok("PUT", policy, json=_signature_policy(_key_pair(cosign, tmp_path / "k")))
    try:
        dev = _login(stack, stack.users["dev"])
        answer = _deliver(dev, a, "hostile", f"{host}/{repository}:big@{big}")
        assert answer.status_code == 422, answer.text
        assert "larger than" in answer.json()["message"]
        answer = _deliver(dev, a, "hostile", f"{host}/{repository}:many@{many}")
        assert answer.status_code == 422, answer.text
        assert "more than" in answer.json()["message"]
        assert answer.json()["message"].count("not base64") == 0
    finally:
        stack.admin.ok("DELETE", policy, params={"confirm": "signed"})


def test_a_signature_policy_key_that_is_not_an_ecdsa_public_key_is_a_422(stack: Stack) -> None:
    policy = {
        "kind": "SignaturePolicy",
        "metadata": {"name": "bad"},
        "spec": {"project": "proj", "keys": [{"name": "x", "publicKey": "not a key"}]},
    }
    path = f"/api/v1/tenants/{stack.tenant_a}/signaturepolicies/bad"
    answer = stack.admin.request("PUT", path, json=policy)
    assert answer.status_code == 422
    assert answer.json()["field"] == "spec.keys.0.publicKey"
    assert stack.admin.request("GET", path).status_code == 404


# -- Schedules -----------------------------------------------------------------------------------
def _pushed_in_order(stack: Stack, tmp_path: Path, repository: str, tags: list[str]) -> None:
    a = stack.tenant_a
    image = repository.rpartition("/")[2]
    for tag in tags:
        _push_content(stack, tmp_path, f"{repository}:{tag}", f"{repository} {tag}\n".encode())

    def recorded() -> bool:
        params = {"tenant": a, "kind": "Image", "action": "push", "limit": 500}
        names = {e["name"] for e in stack.admin.ok("GET", "/api/v1/audit", params=params)["items"]}
        return {f"{image}:{t}" for t in tags} <= names

    wait_for(recorded, what="every push in the audit trail (their order decides)")


def test_retention_runs_on_its_schedule_and_keeps_its_report(stack: Stack, tmp_path: Path) -> None:
    a = stack.tenant_a
    repository = f"{a}/proj/sched"
    _pushed_in_order(stack, tmp_path, repository, ["t1", "t2", "t3"])

    def policy(name: str, delete: bool) -> dict[str, Any]:
        return {
            "kind": "RetentionPolicy",
            "metadata": {"name": name},
            "spec": {
                "project": "proj",
                "repositories": ["sched"],
                "keepLast": 1,
                "schedule": {"everyMinutes": 60, "delete": delete},
            },
        }

    # A dry run on the schedule: the report is kept, nothing is deleted.
    path = f"/api/v1/tenants/{a}/retentionpolicies/sched-report"
    stack.admin.ok("PUT", path, json=policy("sched-report", delete=False))
    last = wait_for(
        lambda: stack.admin.ok("GET", path)["status"].get("lastRun"), what="a scheduled dry run"
    )
    assert (last["by"], last["dryRun"]) == ("wharf", True)
    doomed = {d["tag"] for d in last["decisions"] if d["action"] == "delete"}
    assert doomed == {"t1", "t2"}
    assert (last["kept"], last["deleted"]) == (1, 2)
    assert _tags_at(stack, 0, repository) == {"t1", "t2", "t3"}
    # A viewer reads the report (a member of the project).
    viewer = _login(stack, stack.users["viewer"])
    assert viewer.ok("GET", path)["status"]["lastRun"]["deleted"] == 2

    # On a schedule that deletes: exactly the report's tags go, audited as Wharf's.
    stack.admin.ok(
        "PUT",
        f"/api/v1/tenants/{a}/retentionpolicies/sched-delete",
        json=policy("sched-delete", delete=True),
    )
    wait_for(lambda: _tags_at(stack, 0, repository) == {"t3"}, what="the scheduled deletion")
    params = {"tenant": a, "action": "retention-delete", "actor": "wharf"}
    deletions = stack.admin.ok("GET", "/api/v1/audit", params=params)["items"]
    assert {e["name"] for e in deletions} >= {"sched:t1", "sched:t2"}
    bad = policy("sched-bad", delete=False)
    bad["spec"]["schedule"] = {"everyMinutes": 0}
    answer = stack.admin.request(
        "PUT", f"/api/v1/tenants/{a}/retentionpolicies/sched-bad", json=bad
    )
    assert answer.status_code == 422
    assert answer.json()["field"] == "spec.schedule.everyMinutes"


def test_replication_on_a_schedule_copies_what_the_notifications_missed(
    stack: Stack, tmp_path: Path
) -> None:
    a = stack.tenant_a
    repository = f"{a}/proj/synced"
    # Pushed before any rule: no notification queued a copy.
    _pushed_in_order(stack, tmp_path, repository, ["v1", "v2"])
    target = stack.registries[1]
    target.stop()  # the first sync fails; the rule stays due and is retried
    path = f"/api/v1/tenants/{a}/replicationrules/sync"
    rule = {
        "kind": "ReplicationRule",
        "metadata": {"name": "sync"},
        "spec": {
            "project": "proj",
            "source": "reg1",
            "target": "reg2",
            "repositories": ["synced"],
            "schedule": {"everyMinutes": 60},
        },
    }
    try:
        stack.admin.ok("PUT", path, json=rule)
        wait_for(
            lambda: "sync" in stack.admin.ok("GET", path)["status"].get("lastError", ""),
            what="the failed sync reported",
        )
        assert "lastSync" not in stack.admin.ok("GET", path)["status"]
    finally:
        target.start()
    wait_for(lambda: _tags_at(stack, 1, repository) == {"v1", "v2"}, what="the scheduled sync")
    status = wait_for(
        lambda: (s := stack.admin.ok("GET", path)["status"]).get("pending") == [] and s,
        what="nothing pending",
    )
    assert status["lastSync"]
    assert status["lastError"] == ""
    assert sorted(h["tag"] for h in status["history"]) == ["v1", "v2"]
