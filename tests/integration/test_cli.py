"""The `wharf` CLI against a real server: login, apply -f, get, describe, audit, kubeconfig,
delete — the way a kubectl user would drive it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import yaml

from tests.integration.conftest import ADMIN_PASSWORD, WHARF_USER, ServerProcess, wait_for


@pytest.fixture(scope="module")
def server(lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    workdir = tmp_path_factory.mktemp("cli")
    with ServerProcess(workdir, WHARF_CONFIG=str(workdir / "config.yaml")) as process:
        yield process.env


def wharf(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wharf", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_kubectl_user_drives_the_platform_from_the_cli(server, lab, tmp_path):
    url = f"http://127.0.0.1:{server['WHARF_PORT']}"
    bad = wharf(server, "login", "--server", url, "-u", "admin", "-p", "wrong")
    assert bad.returncode == 1
    assert "401 unauthenticated" in bad.stderr
    ok = wharf(server, "login", "--server", url, "-u", "admin", "-p", ADMIN_PASSWORD)
    assert ok.returncode == 0, ok.stderr

    clusters = "\n---\n".join(
        yaml.safe_dump(
            {
                "apiVersion": "wharf.io/v1",
                "kind": "Cluster",
                "metadata": {"name": c.name, "labels": {"region": "local"}},
                "spec": {
                    "kubeconfig": c.user_kubeconfig(WHARF_USER, ("system:masters",)).read_text()
                },
            }
        )
        for c in lab.clusters()
    )
    applied = wharf(server, "apply", "-f", "-", stdin=clusters)
    assert applied.stdout.splitlines() == ["cluster/lab1 created", "cluster/lab2 created"]
    wait_for(
        lambda: wharf(server, "get", "clusters").stdout.count("Ready") == 2,
        what="clusters Ready in `wharf get`",
    )
    table = wharf(server, "get", "clusters").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "VERSION", "NODES", "AGE"]
    assert table[1].split()[:4] == ["lab1", "Ready", "v1.37.2", "3"]

    assert wharf(server, "user", "create", "dana", "--password", "password-123").returncode == 0
    manifest = tmp_path / "team.yaml"
    manifest.write_text(
        textwrap.dedent("""\
        apiVersion: wharf.io/v1
        kind: Tenant
        metadata: {name: retail}
        spec:
          admins: [dana]
          quota: {cpu: "8", memory: 16Gi, pods: "50"}
          clusters: [lab1, lab2]
        ---
        apiVersion: wharf.io/v1
        kind: Project
        metadata: {name: checkout, tenant: retail, labels: {team: payments}}
        spec:
          quota: {cpu: "2", memory: 4Gi, pods: "10"}
          environments:
          - {name: dev, clusters: [lab1, lab2]}
        """)
    )
    applied = wharf(server, "apply", "-f", str(manifest))
    assert applied.stdout.splitlines() == ["tenant/retail created", "project/checkout created"]
    again = wharf(server, "apply", "-f", str(manifest))
    assert again.stdout.splitlines() == ["tenant/retail configured", "project/checkout configured"]

    wait_for(
        lambda: "Ready" in wharf(server, "get", "projects", "-t", "retail").stdout,
        what="project Ready",
    )
    listed = wharf(server, "get", "projects", "-l", "team=payments", "-o", "name")
    assert listed.stdout.split() == ["project/checkout"]
    described = wharf(server, "describe", "project", "checkout", "-t", "retail").stdout
    assert "Tenant:       retail" in described
    assert "Ready      True    Placed" in described
    as_yaml = yaml.safe_load(wharf(server, "get", "tenant", "retail", "-o", "yaml").stdout)
    assert as_yaml["status"]["allocated"] == {
        "pods": "10",
        "requests.cpu": "2",
        "requests.memory": "4Gi",
    }

    # Bad input: a clear error naming the field, and nothing changes.
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "kind: Project\nmetadata: {name: checkout, tenant: retail}\nspec: {quota: {cpu: lots}}\n"
    )
    refused = wharf(server, "apply", "-f", str(broken))
    assert refused.returncode == 1
    assert "'lots' is not a Kubernetes quantity" in refused.stderr
    missing = wharf(server, "get", "project", "nope", "-t", "retail")
    assert missing.returncode == 1
    assert "404 not_found" in missing.stderr

    # The tenant admin logs in and gets a kubeconfig for the project.
    dana_env = {**server, "WHARF_CONFIG": str(tmp_path / "dana.yaml")}
    assert (
        wharf(dana_env, "login", "--server", url, "-u", "dana", "-p", "password-123").returncode
        == 0
    )
    config = tmp_path / "checkout.kubeconfig"
    issued = wharf(
        dana_env, "kubeconfig", "-t", "retail", "-p", "checkout", "-e", "dev", "-o", str(config)
    )
    assert issued.returncode == 0, issued.stderr
    contexts = yaml.safe_load(config.read_text())["contexts"]
    assert [c["context"]["namespace"] for c in contexts] == ["retail--checkout-dev"] * 2
    token = wharf(dana_env, "token", "create", "ci", "--expires", "1d", "--read-only")
    assert token.returncode == 1  # longer than her 12-hour login, without her password
    assert "cannot outlive it" in token.stderr
    token = wharf(
        dana_env, "token", "create", "ci", "--expires", "1d", "--read-only", "-p", "password-123"
    )
    assert token.stdout.startswith("wharf_")
    assert "ci" in wharf(dana_env, "token", "list").stdout

    events = wharf(dana_env, "audit", "-o", "json").stdout
    audited = [(e["action"], e["kind"], e["name"]) for e in yaml.safe_load(events)]
    assert ("issue-kubeconfig", "Project", "checkout") in audited
    assert ("apply", "Project", "checkout") in audited
    # Her tenant's events, and her own logins and tokens outside any tenant; nothing else.
    assert all(
        e["tenant"] == "retail" or (e["tenant"] == "" and e["actor"] == "dana")
        for e in yaml.safe_load(events)
    )

    gone = wharf(server, "delete", "project", "checkout", "-t", "retail", "--yes")
    assert gone.stdout.strip() == "project/checkout deleted"
    assert wharf(server, "get", "projects", "-t", "retail").stderr.startswith("No projects")


def test_delivering_and_rolling_back_an_application_from_the_cli(server, tmp_path):
    """Runs after the test above, which logged in as admin and registered the clusters."""
    setup = tmp_path / "media.yaml"
    setup.write_text(
        textwrap.dedent("""\
        kind: Tenant
        metadata: {name: media}
        spec: {quota: {cpu: "4", memory: 8Gi, pods: "20"}, clusters: [lab1, lab2]}
        ---
        kind: Project
        metadata: {name: video, tenant: media}
        spec:
          quota: {cpu: "2", memory: 4Gi, pods: "10"}
          environments: [{name: prod, clusters: [lab1, lab2]}]
        """)
    )
    assert wharf(server, "apply", "-f", str(setup)).returncode == 0
    wait_for(
        lambda: "Ready" in wharf(server, "get", "projects", "-t", "media").stdout,
        what="project placed",
    )
    raw = tmp_path / "raw.yaml"
    raw.write_text(
        textwrap.dedent("""\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: "${name}-banner"}
        data: {text: "Now showing: ${title}"}
        """)
    )
    imported = wharf(
        server,
        "template",
        "import",
        "-f",
        str(raw),
        "--name",
        "banner",
        "--version",
        "1.0.0",
        "--publish",
    )
    assert imported.stdout.strip() == "apptemplate/banner 1.0.0 imported (parameters: name, title)"
    app = tmp_path / "app.yaml"
    for title in ("Metropolis", "Nosferatu"):
        app.write_text(
            textwrap.dedent(f"""\
            kind: Application
            metadata: {{name: banner, tenant: media}}
            spec:
              project: video
              environment: prod
              template: {{name: banner, version: 1.0.0}}
              values: {{name: main, title: {title}}}
            """)
        )
        assert wharf(server, "apply", "-f", str(app)).returncode == 0
    history = wharf(server, "app", "history", "banner", "-t", "media").stdout.splitlines()
    assert [line.split()[0] for line in history] == ["REVISION", "1", "2"]
    changes = wharf(server, "app", "diff", "banner", "-t", "media", "--from", "1", "--to", "2")
    assert changes.stdout.strip() == 'values.title: "Metropolis" -> "Nosferatu"'
    rolled = wharf(server, "app", "rollback", "banner", "-t", "media", "--to", "1")
    assert rolled.stdout.strip() == "application/banner rolled back to revision 1"
    wait_for(
        lambda: "Available" in wharf(server, "get", "apps", "-t", "media").stdout,
        what="application Available",
    )
    shown = yaml.safe_load(
        wharf(server, "get", "app", "banner", "-t", "media", "-o", "yaml").stdout
    )
    assert shown["spec"]["values"]["title"] == "Metropolis"
    # The rollback is revision 3, and the table says so once it is delivered.
    header, row = wait_for(
        lambda: (
            (table := wharf(server, "get", "apps", "-t", "media").stdout.splitlines())
            and table[1].split()[5:7] == ["Available", "3"]
            and table
        ),
        what="revision 3 Available in `wharf get apps`",
    )
    assert header.split()[5:7] == ["STATE", "REVISION"]
    assert row.split()[:2] == ["media", "banner"]


@pytest.fixture
def admin_cli(server, lab) -> dict[str, str]:
    """The CLI logged in as admin, with both lab clusters registered (whatever ran before)."""
    url = f"http://127.0.0.1:{server['WHARF_PORT']}"
    assert (
        wharf(server, "login", "--server", url, "-u", "admin", "-p", ADMIN_PASSWORD).returncode == 0
    )
    for c in lab.clusters():
        kubeconfig = c.user_kubeconfig(WHARF_USER, ("system:masters",)).read_text()
        manifest = {
            "kind": "Cluster",
            "metadata": {"name": c.name},
            "spec": {"kubeconfig": kubeconfig},
        }
        assert wharf(server, "apply", "-f", "-", stdin=yaml.safe_dump(manifest)).returncode == 0
    wait_for(
        lambda: wharf(server, "get", "clusters").stdout.count("Ready") == 2, what="clusters Ready"
    )
    return server


def test_describe_shows_usage_under_the_names_the_quota_uses(admin_cli, lab, kubectl, tmp_path):
    setup = tmp_path / "books.yaml"
    setup.write_text(
        textwrap.dedent("""\
        kind: Tenant
        metadata: {name: books}
        spec:
          quota: {requests.cpu: "8", requests.memory: 16Gi, pods: "40"}
          clusters: [lab1, lab2]
        ---
        kind: Project
        metadata: {name: shelf, tenant: books}
        spec:
          quota: {cpu: "4", memory: 8Gi, pods: "20"}
          environments: [{name: prod, clusters: [lab1], quota: {requests.cpu: "2"}}]
        """)
    )
    assert wharf(admin_cli, "apply", "-f", str(setup)).returncode == 0
    wait_for(
        lambda: "Ready" in wharf(admin_cli, "get", "projects", "-t", "books").stdout,
        what="project placed",
    )
    kubectl(
        lab.cluster("lab1"),
        *("-n", "books--shelf-prod", "create", "deployment", "api"),
        *("--image=registry.example/api:1", "--replicas=2"),
    )
    wait_for(
        lambda: (
            yaml.safe_load(wharf(admin_cli, "get", "tenant", "books", "-o", "yaml").stdout)[
                "status"
            ]
            .get("used", {})
            .get("pods")
            == "2"
        ),
        what="the tenant counts 2 pods",
    )
    tenant = wharf(admin_cli, "describe", "tenant", "books").stdout
    assert (
        textwrap.dedent("""\
        Quota:
          RESOURCE          HARD   ALLOCATED   USED
          requests.cpu      8      4           200m
          requests.memory   16Gi   8Gi         256Mi
          pods              40     20          2
        """)
        in tenant
    )
    project = wharf(admin_cli, "describe", "project", "shelf", "-t", "books").stdout
    assert (
        textwrap.dedent("""\
        Quota:
          RESOURCE   HARD   USED
          cpu        4      200m
          memory     8Gi    256Mi
          pods       20     2
        """)
        in project
    )


def test_app_status_follows_each_cluster_until_available_or_says_why_not(admin_cli, tmp_path):
    setup = tmp_path / "news.yaml"
    setup.write_text(
        textwrap.dedent("""\
        kind: Tenant
        metadata: {name: news}
        spec: {quota: {cpu: "4", memory: 8Gi, pods: "20"}, clusters: [lab1, lab2]}
        ---
        kind: Project
        metadata: {name: desk, tenant: news}
        spec:
          quota: {cpu: "2", memory: 4Gi, pods: "10"}
          environments: [{name: prod, clusters: [lab1, lab2]}]
        ---
        kind: Application
        metadata: {name: front, tenant: news}
        spec:
          project: desk
          environment: prod
          template: {name: web-service, version: 1.0.0}
          values: {name: front, image: "registry.example/news/front:1.0.0", replicas: 2}
        """)
    )
    assert wharf(admin_cli, "apply", "-f", str(setup)).returncode == 0
    done = wharf(admin_cli, "app", "status", "front", "-t", "news", "--timeout", "120")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Waiting for application front (tenant news) to be Available"
    latest = dict(line.strip().split(": ", 1) for line in lines if line.startswith("  lab"))
    assert latest == {"lab1": "Available, 2/2 ready", "lab2": "Available, 2/2 ready"}
    assert lines[-1] == "application/front is Available in lab1, lab2 (revision 1)"
    once = wharf(admin_cli, "app", "status", "front", "-t", "news", "--no-watch")
    assert once.returncode == 0
    assert once.stdout.splitlines()[1:] == [
        "  lab1: Available, 2/2 ready",
        "  lab2: Available, 2/2 ready",
        "application/front is Available in lab1, lab2 (revision 1)",
    ]

    # A revision the clusters refuse (a typo in the Deployment) fails, and says where and why.
    raw = tmp_path / "typo.yaml"
    raw.write_text(
        textwrap.dedent("""\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: "${name}"}
        spec:
          replicaz: 1
          selector: {matchLabels: {run: "${name}"}}
          template:
            metadata: {labels: {run: "${name}"}}
            spec:
              containers:
              - name: c
                image: registry.example/news/typo:1.0.0
                resources: {requests: {cpu: 10m}, limits: {cpu: 10m}}
                readinessProbe: {tcpSocket: {port: 1}}
                livenessProbe: {tcpSocket: {port: 1}}
        """)
    )
    assert (
        wharf(
            admin_cli, "template", "import", "-f", str(raw), "--name", "typo", "--publish"
        ).returncode
        == 0
    )
    app = {
        "kind": "Application",
        "metadata": {"name": "typo", "tenant": "news"},
        "spec": {
            "project": "desk",
            "environment": "prod",
            "template": {"name": "typo", "version": "1.0.0"},
            "values": {"name": "typo"},
        },
    }
    assert wharf(admin_cli, "apply", "-f", "-", stdin=yaml.safe_dump(app)).returncode == 0
    failed = wharf(admin_cli, "app", "status", "typo", "-t", "news", "--timeout", "120")
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: application/typo failed: lab1: rejected by the cluster")
    assert "; lab2: rejected by the cluster" in failed.stderr
    assert "replicaz" in failed.stderr
    assert "  lab1: Failed, rejected by the cluster" in failed.stdout


def test_explain_prints_what_a_user_needs_to_write_a_field(server):
    url = f"http://127.0.0.1:{server['WHARF_PORT']}"
    env = {**server, "WHARF_SERVER": url}  # the schemas are served without a token
    out = wharf(env, "explain", "application.spec.overrides")
    assert out.returncode == 0, out.stderr
    assert "FIELD:    spec.overrides <map[string]ClusterOverride>" in out.stdout
    assert "  replicas\t<integer>" in out.stdout
    assert "      registry: <string>" in out.stdout
    by_short_name = wharf(env, "explain", "proj.spec.podSecurity")
    assert "ALLOWED:  baseline, restricted, privileged" in by_short_name.stdout
    wrong = wharf(env, "explain", "tenant.spec.quotas")
    assert wrong.returncode == 1
    assert "no field 'quotas'" in wrong.stderr


def test_reach_answers_from_the_rendered_traffic_rules(admin_cli):
    setup = textwrap.dedent("""\
        kind: Tenant
        metadata: {name: mall}
        spec: {clusters: [lab1], quota: {cpu: "1", memory: 1Gi}}
        ---
        kind: Project
        metadata: {name: shop, tenant: mall}
        spec:
          quota: {cpu: "1", memory: 1Gi}
          environments: [{name: dev, clusters: [lab1]}]
        ---
        kind: TrafficPolicy
        metadata: {name: shop, tenant: mall}
        spec:
          defaultDeny: true
          allow: [{from: {application: web}, to: {application: db}, ports: [5432]}]
        """)
    applied = wharf(admin_cli, "apply", "-f", "-", stdin=setup)
    assert applied.returncode == 0, applied.stderr
    allowed = wharf(admin_cli, "reach", "shop/web", "shop/db", "5432", "-t", "mall")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.startswith("shop/web -> shop/db:5432 (dev): allowed")
    denied = wharf(admin_cli, "reach", "shop/db", "shop/web", "5432", "-t", "mall")
    assert denied.returncode == 1
    assert "denied" in denied.stdout
    assert "wharf-default-deny" in denied.stdout
    bad = wharf(admin_cli, "reach", "nowhere at all", "shop/web", "80", "-t", "mall")
    assert bad.returncode == 1
    assert "from:" in bad.stderr
