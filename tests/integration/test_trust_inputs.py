"""Trust, part 2: hostile kubeconfigs, oversized and self-multiplying documents, stolen
tokens. These run a whole server (API + controllers) on both databases; the ones that need
clusters use the lab through the `wharf` fixture."""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.integration.conftest import ADMIN_PASSWORD, Api, Wharf, wait_for
from wharf.core.config import Settings
from wharf.server import create_app
from wharf.store.resources import ResourceStore

CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nnot checked here\n").decode()
INLINE_CA = {"certificate-authority-data": CA}


@pytest.fixture
def server(database_url: str) -> Iterator[Api]:
    """A server with its controllers and no clusters, as a platform admin."""
    settings = Settings(
        database_url=database_url,
        admin_password=ADMIN_PASSWORD,
        secret_key="trust-test-key",
        heartbeat_seconds=0.5,
    )
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        yield Api(client, answer.json()["token"], "admin")


def kubeconfig(
    server: str = "https://cluster.example:6443",
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster or {"server": server, **INLINE_CA}}],
        "users": [{"name": "u", "user": user if user is not None else {"token": "abc"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }


def cluster_body(name: str, config: Any) -> dict[str, Any]:
    text = config if isinstance(config, str) else yaml.safe_dump(config)
    return {"kind": "Cluster", "metadata": {"name": name}, "spec": {"kubeconfig": text}}


def exec_user(marker: Path) -> dict[str, Any]:
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "/bin/sh",
            "args": ["-c", f'touch {marker}; echo \'{{"status": {{"token": "t"}}}}\''],
        }
    }


def _with(path: str, value: Any) -> dict[str, Any]:
    """A good kubeconfig with one value put at a dotted path (list indexes as numbers)."""
    doc = kubeconfig()
    *parents, leaf = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(leaf)] = value
    else:
        node[leaf] = value
    return doc


HOSTILE_KUBECONFIGS = {
    "token file": (_with("users.0.user", {"tokenFile": "/etc/shadow"}), "users[0].user.tokenFile"),
    "client certificate path": (
        _with("users.0.user", {"client-certificate": "/etc/ssl/a.pem", "client-key": "/k"}),
        "users[0].user.client-certificate",
    ),
    "CA path": (
        _with("clusters.0.cluster", {"server": "https://c.example", "certificate-authority": "/x"}),
        "clusters[0].cluster.certificate-authority",
    ),
    "auth provider": (
        _with("users.0.user", {"auth-provider": {"name": "gcp", "config": {"cmd-path": "/bin/x"}}}),
        "users[0].user.auth-provider",
    ),
    "proxy url": (
        _with("clusters.0.cluster", {"server": "https://c.example", "proxy-url": "http://evil"}),
        "clusters[0].cluster.proxy-url",
    ),
    "no TLS verification": (
        _with(
            "clusters.0.cluster", {"server": "https://c.example", "insecure-skip-tls-verify": True}
        ),
        "clusters[0].cluster.insecure-skip-tls-verify",
    ),
    "basic auth": (
        _with("users.0.user", {"username": "a", "password": "b"}),
        "users[0].user.password",
    ),
    "plain http": (kubeconfig(server="http://cluster.example"), "clusters[0].cluster.server"),
    "metadata address": (
        kubeconfig(server="https://169.254.169.254"),
        "clusters[0].cluster.server",
    ),
    "metadata name": (
        kubeconfig(server="https://metadata.google.internal"),
        "clusters[0].cluster.server",
    ),
    "mapped link-local": (
        kubeconfig(server="https://[::ffff:169.254.10.1]:6443"),
        "clusters[0].cluster.server",
    ),
    "loopback": (kubeconfig(server="https://127.0.0.1:6443"), "clusters[0].cluster.server"),
    "localhost": (kubeconfig(server="https://localhost:6443"), "clusters[0].cluster.server"),
    "users as a map": (_with("users", {"u": {"token": "t"}}), "users"),
    "a user that is a list": (_with("users.0.user", ["token"]), "users[0].user"),
    "a cluster with no name": (_with("clusters.0", {"cluster": {"server": "https://a"}}), "name"),
    "a cluster with no server": (
        _with("clusters.0.cluster", {"certificate-authority-data": CA}),
        "clusters[0].cluster.server",
    ),
    "a server that is a number": (_with("clusters.0.cluster.server", 6443), "server"),
    "a port that is not a number": (
        kubeconfig(server="https://cluster.example:http"),
        "clusters[0].cluster.server",
    ),
    "CA data that is not base64": (
        _with("clusters.0.cluster.certificate-authority-data", "%%%"),
        "certificate-authority-data",
    ),
    "a context naming no cluster": (_with("contexts.0.context", {"user": "u"}), "cluster"),
    "an unknown current context": (_with("current-context", "nope"), "current-context"),
    "a document that is a list": ([kubeconfig()], "must be a map"),
    "key without certificate": (
        _with("users.0.user", {"client-key-data": CA}),
        "client-certificate-data",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_KUBECONFIGS))
def test_a_hostile_or_malformed_kubeconfig_is_refused_naming_its_path(server: Api, case: str):
    doc, where = HOSTILE_KUBECONFIGS[case]
    answer = server.request("PUT", "/api/v1/clusters/evil", json=cluster_body("evil", doc))
    assert answer.status_code == 422, f"{case}: {answer.status_code} {answer.text}"
    body = answer.json()
    assert body["field"] == "spec.kubeconfig"
    assert where in body["message"], body["message"]
    assert server.get("/api/v1/clusters/evil").status_code == 404


def test_a_kubeconfig_that_runs_a_command_is_refused_and_the_command_never_runs(
    server: Api, tmp_path: Path
):
    marker = tmp_path / "ran"
    doc = kubeconfig(user=exec_user(marker))
    answer = server.request("PUT", "/api/v1/clusters/evil", json=cluster_body("evil", doc))
    assert answer.status_code == 422, answer.text
    assert "users[0].user.exec" in answer.json()["message"]
    assert "run a command" in answer.json()["message"]
    assert server.get("/api/v1/clusters/evil").status_code == 404
    assert not marker.exists()


def test_a_stored_hostile_kubeconfig_is_refused_again_when_loaded(server: Api, tmp_path: Path):
    """A kubeconfig stored before the checks existed (or written around them) never reaches
    lightkube whole: the controller refuses it and says so in the cluster's status."""
    marker = tmp_path / "ran"
    app = server.client.app
    doc = kubeconfig(server="https://cluster.invalid", user=exec_user(marker))
    box = app.state.cluster_rules.box  # type: ignore[attr-defined]
    sealed = box.seal(yaml.safe_dump(doc), "Cluster//old/spec.kubeconfig")
    with app.state.db.session() as session:  # type: ignore[attr-defined]
        ResourceStore(session).create(
            "Cluster", "", "old", labels={}, annotations={}, spec={"kubeconfig": sealed}
        )
    app.state.platform.clusters.controller.queue.add("old")  # type: ignore[attr-defined]

    def refused() -> dict[str, Any] | None:
        status = server.ok("GET", "/api/v1/clusters/old")["status"]
        return status if status.get("phase") == "Refused" else None

    status = wait_for(refused, what="the stored kubeconfig refused")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert "users[0].user.exec" in ready["message"]
    assert not marker.exists()


def test_an_inline_kubeconfig_to_a_named_https_server_is_accepted(server: Api):
    doc = copy.deepcopy(kubeconfig(server="https://cluster.invalid:6443"))
    answer = server.request("PUT", "/api/v1/clusters/fine", json=cluster_body("fine", doc))
    assert answer.status_code == 201, answer.text


# -- bounded input ---------------------------------------------------------------------------


def alias_bomb(levels: int, width: int = 10) -> str:
    """A small YAML document whose aliases expand to width**levels scalars."""
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def indented(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def tenant_yaml(name: str, extra: str = "") -> str:
    return f"apiVersion: wharf.io/v1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec:\n{extra}"


def test_a_body_over_the_bound_is_refused_before_it_is_read(server: Api):
    big = {"kind": "Tenant", "metadata": {"name": "huge"}, "spec": {"displayName": "x" * 3_000_000}}
    answer = server.request("POST", "/api/v1/apply", json=big)
    assert answer.status_code == 413, answer.text[:300]
    assert answer.json()["code"] == "too_large"
    # Without a Content-Length (chunked), the body is cut off at the bound as it streams in.
    chunks = (
        b'{"kind": "Tenant", "metadata": {"name": "huge"}, "spec": {"displayName": "',
        *[b"x" * 65536] * 40,
        b'"}}',
    )
    headers = {"Authorization": f"Bearer {server.token}", "content-type": "application/json"}
    answer = server.client.post("/api/v1/apply", content=iter(chunks), headers=headers)
    assert answer.status_code == 413, answer.text[:300]
    # Unauthenticated callers are bounded too.
    assert server.client.post("/api/v1/login", content=b"x" * 2_000_000).status_code == 413
    assert server.get("/api/v1/tenants/huge").status_code == 404


def test_the_body_bound_is_a_setting(database_url: str):
    settings = Settings(
        database_url=database_url, admin_password=ADMIN_PASSWORD, max_body_bytes=4096
    )
    with TestClient(create_app(settings)) as client:
        token = client.post(
            "/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        ).json()["token"]
        api = Api(client, token)
        body = {"kind": "Tenant", "metadata": {"name": "t"}, "spec": {"displayName": "x" * 5000}}
        assert api.request("POST", "/api/v1/apply", json=body).status_code == 413
        body["spec"]["displayName"] = "small"
        assert api.request("POST", "/api/v1/apply", json=body).status_code == 201


def test_a_page_marker_past_the_databases_ids_is_a_422_naming_it(server: Api):
    # Found by the conformance run: a 20-digit ?before= overflowed SQLite's integer (a 500).
    answer = server.get("/api/v1/audit", params={"before": "9" * 20})
    assert answer.status_code == 422, answer.text
    assert "before" in answer.text
    assert server.get("/api/v1/audit", params={"before": str(2**63 - 1)}).status_code == 200


def test_yaml_aliases_cannot_multiply_a_document(server: Api):
    # The console's Apply YAML.
    client = server.client
    client.post("/console/login", data={"username": "admin", "password": ADMIN_PASSWORD})
    page = client.get("/console/apply").text
    csrf = page.split('name="csrf-token" content="')[1].split('"')[0]
    bomb = tenant_yaml("bomb", "  displayName: ok\n") + "x:\n" + indented(alias_bomb(6))
    answer = client.post("/console/apply", data={"yaml": bomb, "csrf": csrf})
    assert answer.status_code == 422
    assert "expands to more than" in answer.text
    loop = tenant_yaml("loop", "  displayName: &a [*a]\n")
    answer = client.post("/console/apply", data={"yaml": loop, "csrf": csrf})
    assert answer.status_code == 422
    assert "refers to a node that contains it" in answer.text
    # A cluster's kubeconfig.
    answer = server.request(
        "PUT", "/api/v1/clusters/bomb", json=cluster_body("bomb", alias_bomb(6))
    )
    assert answer.status_code == 422
    assert "expands to more than" in answer.json()["message"]
    for name in ("bomb", "loop"):
        assert server.get(f"/api/v1/tenants/{name}").status_code == 404
    assert server.get("/api/v1/clusters/bomb").status_code == 404


def test_the_cli_refuses_an_alias_bomb_without_running_out_of_memory(tmp_path: Path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(tenant_yaml("bomb", "  displayName: ok\n") + "x:\n" + indented(alias_bomb(9)))
    gib = 1 << 30

    def limit_memory() -> None:  # the old CLI would take the whole machine
        resource.setrlimit(resource.RLIMIT_AS, (gib, gib))

    env = {
        **os.environ,
        "WHARF_CONFIG": str(tmp_path / "none.yaml"),
        "WHARF_SERVER": "http://127.0.0.1:9",
    }
    done = subprocess.run(
        [sys.executable, "-m", "wharf", "apply", "-f", str(bomb)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_memory,
    )
    assert done.returncode == 1
    assert "expands to more than" in done.stderr


def test_a_viewer_is_refused_before_the_spec_is_checked(server: Api):
    """A 422 would tell a viewer what a valid spec looks like, and that a project exists."""
    server.ok("POST", "/api/v1/users", json={"name": "vera", "password": "password-123"})
    tenant = {"kind": "Tenant", "metadata": {"name": "acme"}, "spec": {"viewers": ["vera"]}}
    server.ok("PUT", "/api/v1/tenants/acme", json=tenant)
    login = {"username": "vera", "password": "password-123"}
    vera = Api(server.client, server.client.post("/api/v1/login", json=login).json()["token"])
    for spec in ({"project": "shop", "nonsense": True}, {"project": 7}, {}, {"project": "x"}):
        app = {"kind": "Application", "metadata": {"name": "web", "tenant": "acme"}, "spec": spec}
        answer = vera.request("PUT", "/api/v1/tenants/acme/applications/web", json=app)
        assert answer.status_code == 403, f"{spec}: {answer.status_code} {answer.text}"
        answer = vera.request("POST", "/api/v1/apply", json=app)
        assert answer.status_code == 403, f"{spec}: {answer.status_code} {answer.text}"


# -- token scopes ------------------------------------------------------------------------------


def test_a_kubeconfig_needs_a_token_that_may_write_and_cannot_outlive_it(wharf: Wharf):
    dev = wharf.user()
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi"})
    members = [{"user": dev.user, "role": "developer"}]
    wharf.project(tenant, "shop", {"cpu": "1", "memory": "1Gi"}, members=members)
    wharf.wait_placed(tenant, "shop")
    url = f"/api/v1/tenants/{tenant}/projects/shop/kubeconfig?env=dev&ttl=3600"
    body = {"name": "ro", "readOnly": True, "expiresIn": 7200}
    read_only = Api(wharf.client, dev.ok("POST", "/api/v1/tokens", json=body)["token"])
    answer = read_only.request("POST", url)
    assert answer.status_code == 403, answer.text[:300]
    assert "kubeconfig" in answer.json()["message"]
    # The member's own 12-hour login may, for up to what is left of it.
    assert dev.request("POST", url).status_code == 200
    longer = dev.request("POST", url.replace("ttl=3600", "ttl=86400"))
    assert longer.status_code == 422, longer.text[:300]
    assert longer.json()["field"] == "ttl"


def test_a_token_cannot_outlive_or_reach_past_the_token_that_makes_it(server: Api):
    server.ok("POST", "/api/v1/users", json={"name": "tom", "password": "password-123"})
    server.ok(
        "PUT",
        "/api/v1/tenants/mine",
        json={"kind": "Tenant", "metadata": {"name": "mine"}, "spec": {"admins": ["tom"]}},
    )
    server.ok(
        "PUT",
        "/api/v1/tenants/theirs",
        json={"kind": "Tenant", "metadata": {"name": "theirs"}, "spec": {}},
    )
    login = {"username": "tom", "password": "password-123"}
    tom = Api(server.client, server.client.post("/api/v1/login", json=login).json()["token"])
    year = 365 * 86400
    # A 12-hour login does not make a year-long token...
    answer = tom.request("POST", "/api/v1/tokens", json={"name": "ci", "expiresIn": year})
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "expiresIn"
    # ... unless the password vouches for it (and a wrong one does not).
    wrong = {"name": "ci", "expiresIn": year, "password": "guess-guess"}
    assert tom.request("POST", "/api/v1/tokens", json=wrong).status_code == 403
    right = {"name": "ci", "expiresIn": year, "password": "password-123"}
    assert tom.request("POST", "/api/v1/tokens", json=right).status_code == 201
    # Scopes outside the caller's reach are refused, the same whether they exist or not.
    for tenant in ("theirs", "nosuch"):
        body = {"name": "x", "expiresIn": 600, "tenant": tenant}
        answer = tom.request("POST", "/api/v1/tokens", json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["message"] == f"tenant: tom has no role in tenant {tenant!r}"
    # A project member reaches its tenant (narrowed) and its project, not another project.
    server.ok("POST", "/api/v1/users", json={"name": "pam", "password": "password-123"})
    web = {"members": [{"user": "pam", "role": "developer"}]}
    project = {"kind": "Project", "metadata": {"name": "web"}, "spec": web}
    server.ok("PUT", "/api/v1/tenants/mine/projects/web", json=project)
    login = {"username": "pam", "password": "password-123"}
    pam = Api(server.client, server.client.post("/api/v1/login", json=login).json()["token"])
    for scope, status in (({}, 201), ({"project": "web"}, 201), ({"project": "api"}, 422)):
        body = {"name": "p", "expiresIn": 600, "tenant": "mine", **scope}
        assert pam.request("POST", "/api/v1/tokens", json=body).status_code == status, scope
    # A token made by a short one lives no longer than it.
    short = tom.ok("POST", "/api/v1/tokens", json={"name": "s", "expiresIn": 600})
    child = Api(server.client, short["token"])
    assert (
        child.request("POST", "/api/v1/tokens", json={"name": "c", "expiresIn": 3600}).status_code
        == 422
    )
    assert (
        child.request("POST", "/api/v1/tokens", json={"name": "c", "expiresIn": 60}).status_code
        == 201
    )
    # A tenant-limited token makes tenant-limited tokens only.
    limited = tom.ok(
        "POST", "/api/v1/tokens", json={"name": "l", "expiresIn": 600, "tenant": "mine"}
    )
    made = Api(server.client, limited["token"]).ok(
        "POST", "/api/v1/tokens", json={"name": "m", "expiresIn": 60}
    )
    assert (
        Api(server.client, made["token"]).ok("GET", "/api/v1/whoami")["tokenScope"]["tenant"]
        == "mine"
    )


# -- keys inside specs -------------------------------------------------------------------------


BAD_CONFIGURATIONS = [
    ({"configMaps": {"settings": {"../etc/passwd": "x"}}}, "configMaps.settings.../etc/passwd"),
    ({"configMaps": {"settings": {"line\nbreak": "x"}}}, "configMaps.settings.line\nbreak"),
    ({"configMaps": {"settings": {"🙂": "x"}}}, "configMaps.settings.🙂"),
    ({"configMaps": {"settings": {"..hidden": "x"}}}, "configMaps.settings...hidden"),
    ({"configMaps": {"settings": {"k" * 254: "x"}}}, "configMaps.settings." + "k" * 254),
    ({"configMaps": {"Settings": {"a": "x"}}}, "configMaps.Settings"),
    ({"secrets": {"../db": {"a": "x"}}}, "secrets.../db"),
]


def test_configuration_keys_and_names_are_checked_as_kubernetes_does(wharf: Wharf):
    dev = wharf.user()
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi"})
    members = [{"user": dev.user, "role": "developer"}]
    wharf.project(tenant, "shop", {"cpu": "2", "memory": "2Gi"}, members=members)
    app = {
        "kind": "Application",
        "metadata": {"name": "web", "tenant": tenant},
        "spec": {
            "project": "shop",
            "environment": "dev",
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": "web", "image": "registry.example/web:1"},
        },
    }
    path = f"/api/v1/tenants/{tenant}/applications/web"
    for config, field in BAD_CONFIGURATIONS:
        app["spec"]["config"] = config
        answer = dev.request("PUT", path, json=app)
        assert answer.status_code == 422, f"{config}: {answer.text[:300]}"
        assert answer.json()["field"] == f"spec.config.{field}"
        assert dev.get(path).status_code == 404
    # A NUL is refused wherever it is, before anything reads the body.
    app["spec"]["config"] = {"secrets": {"db": {"a\x00b": "x"}}}
    answer = dev.request("PUT", path, json=app)
    assert (answer.status_code, answer.json()["field"]) == (422, "body")
    # Upper case, digits, '-', '_' and '.' are keys Kubernetes takes.
    app["spec"]["config"] = {"configMaps": {"settings": {"THEME_1.x-y": "autumn"}}}
    assert dev.request("PUT", path, json=app).status_code == 201


def test_environment_variable_names_of_overrides_are_checked(wharf: Wharf):
    admin = wharf.admin
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi"})
    wharf.project(tenant, "shop", {"cpu": "2", "memory": "2Gi"})
    app = {
        "kind": "Application",
        "metadata": {"name": "web", "tenant": tenant},
        "spec": {
            "project": "shop",
            "environment": "dev",
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": "web", "image": "registry.example/web:1"},
            "overrides": {"lab1": {"env": {"1=bad": "x"}}},
        },
    }
    answer = admin.request("PUT", f"/api/v1/tenants/{tenant}/applications/web", json=app)
    assert answer.status_code == 422, answer.text[:300]
    assert answer.json()["field"] == "spec.overrides.lab1.env.1=bad"


# -- metrics -----------------------------------------------------------------------------------


def series(body: str) -> list[str]:
    return [line for line in body.splitlines() if line.startswith("wharf_http_requests_total{")]


def test_metrics_are_for_authenticated_scrapers_and_do_not_grow_with_names(database_url: str):
    settings = Settings(
        database_url=database_url, admin_password=ADMIN_PASSWORD, metrics_token="scrape-token"
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/api/v1/kinds").status_code == 401
        scraper = {"Authorization": "Bearer scrape-token"}
        assert client.get("/metrics", headers=scraper).status_code == 200
        admin = client.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        api = Api(client, admin.json()["token"])
        assert api.get("/metrics").status_code == 200  # a platform admin may look too
        api.ok("POST", "/api/v1/users", json={"name": "tess", "password": "password-123"})
        login = {"username": "tess", "password": "password-123"}
        tess = Api(client, client.post("/api/v1/login", json=login).json()["token"])
        assert tess.get("/metrics").status_code == 403
        assert tess.get("/api/v1/kinds").status_code == 200

        def hammer(round_: int) -> None:
            for i in range(60):
                secret = f"secret{round_}x{i}"
                client.get(f"/api/v1/tenants/{secret}/projects/{secret}")
                client.get(f"/{secret}/{secret}")
                client.request(f"X{secret.upper()}", "/healthz")
                api.get(f"/api/v1/tenants/{secret}")

        hammer(1)
        first = client.get("/metrics", headers=scraper).text
        hammer(2)
        second = client.get("/metrics", headers=scraper).text
    assert "secret" not in second
    assert len(series(first)) == len(series(second)) < 40


# -- login throttling ---------------------------------------------------------------------------


def fake_clock(server: Api, clock: Any) -> None:
    throttle = getattr(server.client.app.state, "login_throttle", None)  # type: ignore[attr-defined]
    if throttle is not None:  # (a server without one fails the assertions, not here)
        throttle.clock = clock


def test_login_is_throttled_per_user_and_address_without_revealing_who_exists(server: Api):
    client = server.client
    clock = [1000.0]
    fake_clock(server, lambda: clock[0])

    def log_in(user: str, password: str) -> Any:
        return client.post("/api/v1/login", json={"username": user, "password": password})

    server.ok("POST", "/api/v1/users", json={"name": "real", "password": "password-123"})
    for user in ("real", "ghost"):
        answers = [log_in(user, "wrong-password") for _ in range(5)]
        assert {a.status_code for a in answers} == {401}
        locked = log_in(user, "password-123")  # even the right password waits its turn
        assert locked.status_code == 429, locked.text
        assert locked.headers["Retry-After"] == "1"
        assert locked.json()["code"] == "throttled"
    # The same answers for a user that exists and one that does not.
    assert log_in("real", "x").json() == log_in("ghost", "x").json()
    # Waiting the time out lets the right password in, which clears the user's count.
    clock[0] += 1
    assert log_in("real", "password-123").status_code == 200
    # Each further failure doubles the wait.
    clock[0] += 10
    log_in("ghost", "wrong-password")
    assert log_in("ghost", "x").headers["Retry-After"] == "2"
    # The console's login is the same door.
    page = client.post("/console/login", data={"username": "ghost", "password": "x"})
    assert page.status_code == 429
    assert "too many failed logins" in page.text
    events = server.ok("GET", "/api/v1/audit", params={"limit": 500})["items"]
    throttled = [e for e in events if e["action"] == "login" and "throttled" in e["reason"]]
    assert {e["name"] for e in throttled} == {"real", "ghost"}


def test_one_address_guessing_many_names_is_throttled(server: Api):
    client = server.client
    fake_clock(server, lambda: 1000.0)
    answers = [
        client.post("/api/v1/login", json={"username": f"n{i}", "password": "guess-guess"})
        for i in range(21)
    ]
    assert [a.status_code for a in answers] == [401] * 20 + [429]
    fresh = client.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert fresh.status_code == 429


def test_a_token_in_hand_guesses_its_users_password_no_faster_than_the_login_does(server: Api):
    """A stolen token must not be a password oracle the login throttle does not see: a token
    that outlives the one in use, and a password change (which even a read-only token may
    try), both check the password, and count as attempts at it."""
    client = server.client
    fake_clock(server, lambda: 1000.0)
    server.ok("POST", "/api/v1/users", json={"name": "victim", "password": "password-123"})
    session = client.post("/api/v1/login", json={"username": "victim", "password": "password-123"})
    victim = Api(client, session.json()["token"], "victim")

    def stolen(read_only: bool) -> Api:
        body = {"name": f"ro-{read_only}", "readOnly": read_only, "expiresIn": 600}
        return Api(client, victim.ok("POST", "/api/v1/tokens", json=body)["token"], "victim")

    def outliving(api: Api, password: str) -> Any:
        body = {"name": "long", "expiresIn": 86400, "password": password}
        return api.request("POST", "/api/v1/tokens", json=body)

    def new_password(api: Api, current: str) -> Any:
        body = {"password": "mine-now-123", "currentPassword": current}
        return api.request("PUT", "/api/v1/users/victim/password", json=body)

    short, read_only = stolen(False), stolen(True)
    guesses = [outliving(short, f"guess-{i}") for i in range(3)]
    guesses += [new_password(read_only, f"guess-{i}") for i in range(2)]
    assert [g.status_code for g in guesses] == [403] * 5, [g.text for g in guesses]
    assert all("password" in g.json()["message"] for g in guesses)
    # Five wrong passwords, however tried: the next check waits, as a login would.
    right = outliving(short, "password-123")
    assert right.status_code == 429, right.text
    assert right.json()["code"] == "throttled"
    assert new_password(read_only, "password-123").status_code == 429
    login = client.post("/api/v1/login", json={"username": "victim", "password": "password-123"})
    assert login.status_code == 429, login.text


# -- users' lifecycle --------------------------------------------------------------------------


def test_a_disabled_or_deleted_user_stops_at_once_and_passwords_change(server: Api):
    client = server.client
    server.ok("POST", "/api/v1/users", json={"name": "uma", "password": "password-123"})

    def log_in(password: str = "password-123") -> Api:
        answer = client.post("/api/v1/login", json={"username": "uma", "password": password})
        return Api(client, answer.json().get("token", ""), "uma")

    uma, other = log_in(), log_in()
    assert uma.get("/api/v1/whoami").status_code == 200
    # Only platform admins manage users.
    assert uma.request("POST", "/api/v1/users/admin/disable").status_code == 403
    server.ok("POST", "/api/v1/users/uma/disable")
    assert uma.get("/api/v1/whoami").status_code == 401
    assert log_in().token == ""
    assert {"name": "uma", "disabled": True} in server.ok("GET", "/api/v1/users")["items"]
    server.ok("POST", "/api/v1/users/uma/enable")
    assert uma.get("/api/v1/whoami").status_code == 401  # her old tokens are gone for good
    uma, other = log_in(), log_in()
    # Her own password: with the current one; her other sessions end, this one stays.
    change = {"password": "password-456"}
    assert uma.request("PUT", "/api/v1/users/uma/password", json=change).status_code == 403
    uma.ok("PUT", "/api/v1/users/uma/password", json={**change, "currentPassword": "password-123"})
    assert uma.get("/api/v1/whoami").status_code == 200
    assert other.get("/api/v1/whoami").status_code == 401
    assert log_in("password-456").token
    # An admin sets it without the old one, and every token of hers ends.
    server.ok("PUT", "/api/v1/users/uma/password", json={"password": "password-789"})
    assert uma.get("/api/v1/whoami").status_code == 401
    # Platform roles are unbound as they are bound; the last admin is kept.
    uma = log_in("password-789")
    server.ok("POST", "/api/v1/platform/rolebindings", json={"user": "uma", "role": "viewer"})
    assert uma.ok("GET", "/api/v1/whoami")["grants"] == [
        {"role": "viewer", "tenant": "", "project": ""}
    ]
    server.ok("DELETE", "/api/v1/platform/rolebindings/uma/viewer")
    assert uma.ok("GET", "/api/v1/whoami")["grants"] == []
    assert server.delete("/api/v1/platform/rolebindings/admin/platform-admin").status_code == 409
    # An admin revokes her tokens.
    listed = server.ok("GET", "/api/v1/users/uma/tokens")["items"]
    assert listed
    assert server.ok("DELETE", "/api/v1/users/uma/tokens")["revoked"] == len(listed)
    assert uma.get("/api/v1/whoami").status_code == 401
    # A user named in a tenant's spec is not deleted from under it; otherwise she goes.
    uma = log_in("password-789")
    tenant = {"kind": "Tenant", "metadata": {"name": "acme"}, "spec": {"viewers": ["uma"]}}
    server.ok("PUT", "/api/v1/tenants/acme", json=tenant)
    refused = server.delete("/api/v1/users/uma")
    assert refused.status_code == 409
    assert "acme" in refused.json()["message"]
    tenant["spec"] = {}
    server.ok("PUT", "/api/v1/tenants/acme", json=tenant)
    server.ok("DELETE", "/api/v1/users/uma")
    assert uma.get("/api/v1/whoami").status_code == 401
    assert "uma" not in [u["name"] for u in server.ok("GET", "/api/v1/users")["items"]]
    assert server.delete("/api/v1/users/admin").status_code == 409  # not yourself
    actions = {(e["action"], e["name"]) for e in server.ok("GET", "/api/v1/audit")["items"]}
    assert {("disable", "uma"), ("change-password", "uma"), ("delete", "uma")} <= actions


def test_the_generated_admin_password_is_never_logged(tmp_path: Path, capsys, caplog):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'wharf.db'}")
    with TestClient(create_app(settings)) as client:
        path = tmp_path / "initial-admin-password"
        password = path.read_text().strip()
        assert path.stat().st_mode & 0o777 == 0o600
        login = {"username": "admin", "password": password}
        assert client.post("/api/v1/login", json=login).status_code == 200
    captured = capsys.readouterr()
    assert "initial-admin-password" in captured.out + captured.err + caplog.text
    assert password not in captured.out + captured.err + caplog.text


# -- web ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "forced", "secure"),
    [
        ("http://testserver", False, False),
        ("https://testserver", False, True),
        ("http://testserver", True, True),
    ],
)
def test_session_cookies_are_secure_over_https_or_when_the_setting_says(
    tmp_path: Path, base_url: str, forced: bool, secure: bool
):
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'w.db'}",
        admin_password=ADMIN_PASSWORD,
        controllers=False,
        secure_cookies=forced,
    )
    with TestClient(create_app(settings), base_url=base_url, follow_redirects=False) as client:
        login = {"username": "admin", "password": ADMIN_PASSWORD}
        cookie = client.post("/console/login", data=login).headers["set-cookie"]
    assert ("; secure" in cookie.lower()) is secure
    assert "httponly" in cookie.lower()


# -- sealed secrets ----------------------------------------------------------------------------


def stored_spec(wharf_app: Any, kind: str, tenant: str, name: str) -> dict[str, Any]:
    with wharf_app.state.db.reader() as session:
        stored = ResourceStore(session).get(kind, tenant, name)
    assert stored is not None
    return stored.spec


def test_ciphertext_from_elsewhere_is_refused_not_opened(wharf: Wharf):
    """A backup's or another object's ciphertext sent as a secret value would come back
    opened, in a Secret the caller can read: the server refuses it."""
    dev = wharf.user()
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi"})
    members = [{"user": dev.user, "role": "developer"}]
    wharf.project(tenant, "shop", {"cpu": "2", "memory": "2Gi"}, members=members)

    def app(name: str, value: str) -> dict[str, Any]:
        return {
            "kind": "Application",
            "metadata": {"name": name, "tenant": tenant},
            "spec": {
                "project": "shop",
                "environment": "dev",
                "template": {"name": "web-service", "version": "1.0.0"},
                "values": {"name": name, "image": "registry.example/web:1"},
                "config": {"secrets": {"db": {"PASSWORD": value}}},
            },
        }

    base = f"/api/v1/tenants/{tenant}/applications"
    dev.ok("PUT", f"{base}/one", json=app("one", "first-secret"))
    one = stored_spec(wharf.app, "Application", tenant, "one")["config"]["secrets"]["db"][
        "PASSWORD"
    ]
    cluster = stored_spec(wharf.app, "Cluster", "", "lab1")["kubeconfig"]
    assert "first-secret" not in one
    for foreign in (one, cluster):
        answer = dev.request("PUT", f"{base}/two", json=app("two", foreign))
        assert answer.status_code == 422, answer.text[:300]
        assert answer.json()["field"] == "spec.config.secrets.db.PASSWORD"
        assert "not this application's" in answer.json()["message"]
    assert dev.get(f"{base}/two").status_code == 404
    # Its own ciphertext (restored from a backup, say) is its own value.
    again = dev.request("PUT", f"{base}/one", json=app("one", one))
    assert again.status_code == 200, again.text[:300]
    # A cluster takes back only its own sealed kubeconfig.
    lab2 = stored_spec(wharf.app, "Cluster", "", "lab2")["kubeconfig"]
    body = {"kind": "Cluster", "metadata": {"name": "lab1"}, "spec": {"kubeconfig": lab2}}
    answer = wharf.admin.request("PUT", "/api/v1/clusters/lab1", json=body)
    assert answer.status_code == 422, answer.text[:300]


def legacy_seal(passphrase: str, text: str) -> str:
    """A value as the earlier versions sealed it: Fernet under SHA-256 of the passphrase."""
    from cryptography.fernet import Fernet

    key = base64.urlsafe_b64encode(hashlib.sha256(passphrase.encode()).digest())
    return "fernet:" + Fernet(key).encrypt(text.encode()).decode()


def test_secrets_rotate_reseals_everything_under_the_new_key(database_url: str, tmp_path: Path):
    old = Settings(database_url=database_url, admin_password=ADMIN_PASSWORD, secret_key="key-a")
    doc = kubeconfig(server="https://cluster.invalid:6443")
    with TestClient(create_app(old)) as client:
        token = client.post(
            "/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        ).json()["token"]
        api = Api(client, token)
        for name in ("c1", "c2"):
            api.ok("PUT", f"/api/v1/clusters/{name}", json=cluster_body(name, doc))
        with client.app.state.db.session() as session:  # type: ignore[attr-defined]
            legacy = {"kubeconfig": legacy_seal("key-a", yaml.safe_dump(doc))}
            ResourceStore(session).create(
                "Cluster", "", "c3", labels={}, annotations={}, spec=legacy
            )
        generations = {
            c["metadata"]["name"]: c["metadata"]["generation"]
            for c in api.ok("GET", "/api/v1/clusters")["items"]
        }
    key_file = tmp_path / "new.key"
    env = {
        **os.environ,
        "WHARF_DATABASE_URL": database_url,
        "WHARF_SECRET_KEY": "",
        "WHARF_SECRET_KEY_FILE": str(key_file),
        "WHARF_PREVIOUS_SECRET_KEYS": "key-a",
    }
    wharf_cli = [sys.executable, "-m", "wharf", "secrets"]
    made = subprocess.run(
        [*wharf_cli, "new-key", str(key_file)], env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    rotated = subprocess.run([*wharf_cli, "rotate"], env=env, capture_output=True, text=True)
    assert rotated.returncode == 0, rotated.stderr
    assert "Cluster: 3 re-sealed" in rotated.stdout
    again = subprocess.run([*wharf_cli, "rotate"], env=env, capture_output=True, text=True)
    assert "Cluster: 0 re-sealed" in again.stdout
    # The new key alone opens everything; the old one alone, nothing.
    new = Settings(database_url=database_url, secret_key_file=key_file, controllers=False)
    with TestClient(create_app(new)) as client:
        rules = client.app.state.cluster_rules  # type: ignore[attr-defined]
        with client.app.state.db.reader() as session:  # type: ignore[attr-defined]
            stored = ResourceStore(session).query("Cluster")
        assert [rules.kubeconfig(s)["clusters"][0]["cluster"]["server"] for s in stored] == [
            "https://cluster.invalid:6443"
        ] * 3
        assert {s.name: s.generation for s in stored} == {**generations, "c3": 1}
    with TestClient(create_app(old.model_copy(update={"controllers": False}))) as client:
        rules = client.app.state.cluster_rules  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match="does not hold"):
            rules.kubeconfig(stored[0])
