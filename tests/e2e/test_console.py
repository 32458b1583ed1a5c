"""The console in a real browser: Debian's Chromium, driven by Playwright (no downloaded browser).

A real `wharf server` (SQLite, then PostgreSQL) with the lab's two clusters registered. Logged in
as each role, the journeys create a project with quota, deliver a catalog application to both
clusters, watch it become Available without a reload, roll it back and find it all in the audit
log; what a role may not do is neither offered nor accepted. Screenshots go to artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import fresh_postgres
from tests.integration.conftest import (
    ADMIN_PASSWORD,
    Api,
    RegistryProcess,
    ServerProcess,
    oci_layout,
    register_clusters,
    skopeo,
    wait_for,
)
from tests.integration.networking import certificate
from wharf.lab import Lab

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
PASSWORD = "password-123"
LIVE = 120_000  # ms a live status may take to reach Available (pods start on kwok nodes)
# A sign-in hashes the password and renders the overview: on a loaded 2-core machine that
# took more than Playwright's default 5 s once; what is checked is that it arrives.
SIGN_IN = 30_000


@dataclass
class Site:
    url: str
    admin: Api
    db: str
    retail: str  # tenant: admin tina, viewer vera; project "team" with developer dave
    media: str  # tenant: admin mona; tina, dave and vera must never see it

    def shot(self, page: Page, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"console-{name}-{self.db}.png"), full_page=True)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, lab: Lab, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp(f"console-{request.param}")
    with ExitStack() as stack:
        url = (
            stack.enter_context(fresh_postgres())
            if request.param == "postgresql"
            else f"sqlite:///{workdir / 'wharf.db'}"
        )
        process = stack.enter_context(ServerProcess(workdir, url))
        admin = process.login()
        register_clusters(admin, lab)
        admin.ok(
            "PUT",
            "/api/v1/nodepools/zone-a",
            json={
                "kind": "NodePool",
                "metadata": {"name": "zone-a"},
                "spec": {
                    "cluster": "lab1",
                    "nodeSelector": {"topology.kubernetes.io/zone": "lab1-zone-1"},
                },
            },
        )
        for user in ("tina", "dave", "vera", "mona"):
            admin.ok("POST", "/api/v1/users", json={"name": user, "password": PASSWORD})
        prefix = request.param[0]  # each database's run has tenants (and namespaces) of its own
        retail, media = f"{prefix}retail", f"{prefix}media"
        for tenant, admins, viewers in ((retail, ["tina"], ["vera"]), (media, ["mona"], [])):
            admin.ok(
                "PUT",
                f"/api/v1/tenants/{tenant}",
                json={
                    "kind": "Tenant",
                    "metadata": {"name": tenant},
                    "spec": {
                        # Room for every test's project: the journeys' three and the release's.
                        "quota": {"cpu": "10", "memory": "20Gi", "pods": "80"},
                        "admins": admins,
                        "viewers": viewers,
                        "clusters": ["lab1", "lab2"],
                    },
                },
            )
        admin.ok(
            "PUT",
            f"/api/v1/tenants/{retail}/projects/team",
            json={
                "kind": "Project",
                "metadata": {"name": "team"},
                "spec": {
                    "members": [{"user": "dave", "role": "developer"}],
                    "quota": {"cpu": "2", "memory": "4Gi", "pods": "20"},
                    "environments": [{"name": "dev", "clusters": ["lab1", "lab2"]}],
                },
            },
        )
        admin.ok(
            "PUT",
            f"/api/v1/tenants/{media}/projects/news",
            json={
                "kind": "Project",
                "metadata": {"name": "news"},
                "spec": {
                    "quota": {"cpu": "1"},
                    "environments": [{"name": "dev", "clusters": ["lab1"]}],
                },
            },
        )
        yield Site(process.url, admin, request.param, retail, media)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).is_file(), "Debian's chromium is not installed (./dev setup installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def sign_in(site: Site, browser: Browser) -> Iterator[Callable[[str, str], Page]]:
    pages: list[Page] = []

    def open_as(user: str, password: str = PASSWORD) -> Page:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        pages.append(page)
        page.goto(f"{site.url}/console/")
        expect(page).to_have_url(re.compile(r"/console/login"))
        page.get_by_label("Username").fill(user)
        page.get_by_label("Password").fill(password)
        page.keyboard.press("Enter")  # the form works from the keyboard
        expect(page.get_by_role("heading", name="Overview")).to_be_visible(timeout=SIGN_IN)
        return page

    yield open_as
    for page in pages:
        page.close()


# -- the steps of a journey ----------------------------------------------------------------------
def nav_links(page: Page) -> list[str]:
    return page.get_by_role("navigation", name="Main").get_by_role("link").all_inner_texts()


def landed_on(page: Page, heading: str) -> None:
    """A form's answer is the page it leads to, or an error that says why not. The heading
    starts with `heading`: "Edit Application cart" is not "Application cart"'s page."""
    wanted = page.get_by_role("heading", name=re.compile("^" + re.escape(heading)))
    refusal = page.get_by_role("alert")
    expect(wanted.or_(refusal)).to_be_visible()
    assert refusal.count() == 0, refusal.inner_text()


def create_project(page: Page, site: Site, tenant: str, name: str, members: str = "") -> None:
    page.get_by_role("link", name="Projects", exact=True).click()
    page.get_by_role("link", name="New project").click()
    page.get_by_label("Tenant").select_option(tenant)
    page.get_by_label(re.compile(r"^Name")).fill(name)
    page.get_by_label(re.compile(r"^CPU")).fill("2")
    page.get_by_label(re.compile(r"^Memory")).fill("4Gi")
    page.get_by_label("Pods").fill("20")
    page.get_by_label("lab1").check()
    page.get_by_label("lab2").check()
    if members:
        page.get_by_label(re.compile(r"^Members")).fill(members)
    page.get_by_role("button", name="Create project").click()
    landed_on(page, f"Project {name}")
    quota = page.get_by_role("table", name="Project quota")
    expect(quota.get_by_role("row", name=re.compile(r"^cpu 2"))).to_be_visible()
    placement = page.get_by_role("table", name="Placement")
    wait_for(
        lambda: (
            page.reload() is not None
            and placement.get_by_role("cell", name="Ready", exact=True).count() == 2
        ),
        timeout=60,
        what=f"project {name} placed on both clusters, shown on its page",
    )


def deliver(page: Page, site: Site, tenant: str, project: str, app: str) -> None:
    page.goto(f"{site.url}/console/tenants/{tenant}/projects/{project}")
    page.get_by_role("link", name="Deliver an application").click()
    page.get_by_label("Template", exact=True).select_option("web-service")  # reloads with its form
    expect(page.get_by_role("group", name=re.compile("Parameters of web-service"))).to_be_visible()
    page.get_by_label(re.compile(r"^Application name")).fill(app)
    page.get_by_label("Environment", exact=True).select_option("dev")
    page.get_by_label(re.compile(r"^name")).fill(app)
    page.get_by_label(re.compile(r"^image")).fill(f"registry.example/{app}:1.0.0")
    page.get_by_label(re.compile(r"^replicas")).fill("2")
    page.get_by_role("button", name="Deliver").click()
    landed_on(page, f"Application {app}")


def watch_available(page: Page) -> None:
    """The status turns Available in both clusters while the page stays loaded (SSE)."""
    page.evaluate("window.stayed = true")
    generation = page.locator("#app-generation").inner_text()
    expect(page.locator("#app-observed")).to_have_text(generation, timeout=LIVE)
    expect(page.locator("#app-state")).to_have_text("Available", timeout=LIVE)
    per_cluster = page.get_by_role("table", name="Status per cluster")
    expect(per_cluster.get_by_role("cell", name="Available", exact=True)).to_have_count(2)
    pods = page.get_by_role("table", name="Pods")
    expect(pods.get_by_role("cell", name="Running", exact=True)).to_have_count(4, timeout=LIVE)
    assert page.evaluate("window.stayed") is True, "the page reloaded; the status must be live"


def change_and_roll_back(page: Page, site: Site, tenant: str, app: str) -> None:
    page.get_by_role("link", name="Change and deliver").click()
    page.get_by_label(re.compile(r"^image")).fill(f"registry.example/{app}:2.0.0")
    page.get_by_label(re.compile(r"^Why")).fill("try 2.0.0")
    page.get_by_role("button", name="Deliver").click()
    landed_on(page, f"Application {app}")
    revisions = page.get_by_role("table", name="Revisions")
    expect(revisions.get_by_role("row")).to_have_count(3)  # header + 2 revisions
    revisions.get_by_role("link", name="Diff with 1").click()
    diff = page.locator("#diff")
    expect(diff.get_by_role("row", name=re.compile(r"values\.image"))).to_contain_text("2.0.0")
    page.get_by_role("button", name="Roll back to revision 1").click()
    expect(revisions.get_by_role("row")).to_have_count(4)
    expect(revisions.get_by_role("row").nth(1)).to_contain_text("rollback to revision 1")
    watch_available(page)
    # Delivered, not only recorded: both clusters run 1.0.0 again.
    app_now = site.admin.ok("GET", f"/api/v1/tenants/{tenant}/applications/{app}")
    assert app_now["spec"]["values"]["image"] == f"registry.example/{app}:1.0.0"
    assert app_now["status"]["observedGeneration"] == app_now["metadata"]["generation"]


def find_in_audit(page: Page, app: str, user: str, project: str | None = None) -> None:
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Name", exact=True).fill(app)
    page.get_by_label("Actor", exact=True).fill(user)
    page.get_by_role("button", name="Filter").click()
    events = page.get_by_role("table", name="Audit events")
    # Deliver, change, roll back: three applies of the application, all allowed.
    rows = events.get_by_role("row").filter(has_text="Application")
    expect(rows).to_have_count(3)
    expect(rows.filter(has_text="allowed")).to_have_count(3)
    expect(rows.first).to_contain_text("registry.example")  # the diff of the rollback
    if project:
        page.get_by_label("Name", exact=True).fill(project)
        page.get_by_role("button", name="Filter").click()
        expect(events.get_by_role("row").filter(has_text="Project")).to_have_count(1)


# -- the journeys --------------------------------------------------------------------------------
def test_platform_admin_journey(site: Site, sign_in: Callable[..., Page]):
    page = sign_in("admin", ADMIN_PASSWORD)
    assert nav_links(page) == [
        "Overview",
        "Clusters",
        "Tenants",
        "Projects",
        "Applications",
        "Incidents",
        "Audit log",
        "API tokens",
        "Users",
        "Apply YAML",
    ]
    # Overview: both clusters with capacity bars; tenants' quota as bars.
    for cluster in ("lab1", "lab2"):
        card = page.get_by_role("article", name=f"Cluster {cluster}")
        expect(card).to_contain_text("Ready")
        expect(card.get_by_role("meter")).to_have_count(3)
    expect(page.get_by_role("meter", name=f"{site.retail} cpu")).to_be_visible()
    site.shot(page, "overview")
    page.get_by_role("link", name="Clusters").click()
    page.get_by_role("link", name="lab1").click()
    nodes = page.get_by_role("table", name="Nodes")
    expect(nodes.get_by_role("row")).to_have_count(4)  # header + 3 kwok nodes
    expect(nodes.get_by_role("cell", name="True", exact=True)).to_have_count(3)
    pools = page.get_by_role("table", name="Node pools")
    # The lab puts its nodes in zones 2, 1, 2: the pool's selector matches node 2 only.
    expect(pools.get_by_role("row", name=re.compile(r"^zone-a"))).to_contain_text(
        "lab1-node-2", timeout=30_000
    )

    create_project(page, site, site.retail, "storefront")
    deliver(page, site, site.retail, "storefront", "shop")
    watch_available(page)
    site.shot(page, "application")
    change_and_roll_back(page, site, site.retail, "shop")
    find_in_audit(page, "shop", "admin", project="storefront")
    site.shot(page, "audit")


def test_tenant_admin_journey(site: Site, sign_in: Callable[..., Page]):
    page = sign_in("tina")
    assert "Clusters" not in nav_links(page)
    assert "Tenants" in nav_links(page)
    expect(page.get_by_role("article")).to_have_count(0)  # no cluster cards
    page.goto(f"{site.url}/console/clusters")
    expect(page.get_by_role("alert")).to_contain_text("may not see the platform's clusters")
    # Another tenant is nowhere: not in the tenant filter, lists or direct URLs.
    page.goto(f"{site.url}/console/projects")
    assert site.media not in page.get_by_label("Tenant").inner_text()
    assert site.media not in page.content()
    page.goto(f"{site.url}/console/tenants/{site.media}/projects/news")
    expect(page.get_by_role("alert")).to_contain_text("not found")
    # A project over the tenant's quota is refused with the reason, and nothing is made.
    page.goto(f"{site.url}/console/projects/new")
    page.get_by_label(re.compile(r"^Name")).fill("toobig")
    page.get_by_label(re.compile(r"^CPU")).fill("50")
    page.get_by_label("lab1").check()
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("alert")).to_contain_text("cpu")
    expect(page.get_by_label(re.compile(r"^Name"))).to_have_value("toobig")  # kept for a retry
    assert site.admin.get(f"/api/v1/tenants/{site.retail}/projects/toobig").status_code == 404

    create_project(page, site, site.retail, "outlet", members="dave=viewer")
    members = page.get_by_role("table", name="Members")
    expect(members.get_by_role("row", name="dave viewer")).to_be_visible()
    deliver(page, site, site.retail, "outlet", "till")
    watch_available(page)
    change_and_roll_back(page, site, site.retail, "till")
    find_in_audit(page, "till", "tina", project="outlet")
    page.get_by_label("Name", exact=True).fill("")
    page.get_by_label("Actor", exact=True).fill("")
    page.get_by_role("button", name="Filter").click()
    assert site.media not in page.content()
    site.shot(page, "tenant-admin")


def test_developer_journey(site: Site, sign_in: Callable[..., Page]):
    page = sign_in("dave")
    assert nav_links(page) == [
        "Overview",
        "Projects",
        "Applications",
        "Incidents",
        "Audit log",
        "API tokens",
        "Apply YAML",
    ]
    for admin_page in ("/console/clusters", "/console/tenants", "/console/projects/new"):
        page.goto(site.url + admin_page)
        expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    page.goto(f"{site.url}/console/projects")
    expect(page.get_by_role("link", name="New project")).to_have_count(0)
    deliver(page, site, site.retail, "team", "cart")
    watch_available(page)
    # The applications list holds the applications of his projects only (team, and outlet
    # where the tenant admin made him a viewer), as their pages would: not the admin's shop.
    page.get_by_role("link", name="Applications").click()
    table = page.get_by_role("table", name="Applications")
    expect(table.get_by_role("row").filter(has_text="cart")).to_have_count(1)
    expect(table).not_to_contain_text(f"{site.retail} / storefront")
    assert site.admin.get(f"/api/v1/tenants/{site.retail}/applications/shop").status_code == 200
    page.goto(f"{site.url}/console/tenants/{site.retail}/applications/cart")
    change_and_roll_back(page, site, site.retail, "cart")
    find_in_audit(page, "cart", "dave")
    assert site.media not in page.content()
    site.shot(page, "developer")

    # Configuration: a change made as YAML becomes a configuration version with its diff.
    # The rollback's status writes may still be landing: the editor refuses only a spec
    # changed since it opened, so they do not stand in the way.
    page.goto(f"{site.url}/console/tenants/{site.retail}/applications/cart")
    page.get_by_role("link", name="Edit YAML").click()
    editor = page.get_by_label("Manifest (YAML)")
    text = editor.input_value()
    assert "configMaps: {}" in text
    editor.fill(text.replace("configMaps: {}", "configMaps: {settings: {THEME: autumn}}"))
    page.get_by_role("button", name="Apply").click()
    landed_on(page, "Application cart")
    versions = page.get_by_role("table", name="Configuration versions")
    expect(versions.get_by_role("row").nth(1)).to_contain_text("config.configMaps.settings")
    expect(versions.get_by_role("row").nth(1)).to_contain_text("autumn")
    configuration = page.get_by_role("table", name="Configuration", exact=True)
    expect(configuration).to_contain_text("THEME=autumn")
    watch_available(page)

    # API tokens: made here, shown once, scoped, and revoked here.
    page.get_by_role("link", name="API tokens").click()
    page.get_by_label("Name").fill("ci")
    page.get_by_label(re.compile("^Only tenant")).fill(site.retail)
    page.get_by_label("Read-only").check()
    page.get_by_label(re.compile("^Your password")).fill(PASSWORD)  # it outlives the session
    page.get_by_role("button", name="Make token").click()
    secret = page.locator("#new-token").inner_text()
    api = httpx.Client(base_url=site.url, headers={"Authorization": f"Bearer {secret}"})
    apps = api.get(f"/api/v1/tenants/{site.retail}/applications").json()["items"]
    assert "cart" in [a["metadata"]["name"] for a in apps]
    assert (
        api.delete(f"/api/v1/tenants/{site.retail}/applications/cart?confirm=cart").status_code
        == 403
    )
    page.get_by_role("link", name="API tokens").click()
    expect(page.locator("#new-token")).to_have_count(0)  # shown once only
    tokens = page.get_by_role("table", name="Tokens")
    expect(tokens.get_by_role("row", name=re.compile(r"^ci "))).to_contain_text("read-only")
    page.get_by_role("button", name="Revoke token ci").click()
    expect(tokens.get_by_role("row", name=re.compile(r"^ci "))).to_have_count(0)
    assert api.get(f"/api/v1/tenants/{site.retail}/applications").status_code == 401


def test_whatever_else_the_api_offers_goes_through_yaml_and_the_users_page(
    site: Site, sign_in: Callable[..., Page]
):
    page = sign_in("admin", ADMIN_PASSWORD)
    # A new tenant from YAML; a wrong document is refused with where and why.
    page.get_by_role("link", name="Apply YAML").click()
    yaml_box = page.get_by_label("Manifests (YAML)")
    yaml_box.fill("kind: Tenant\nmetadata: {name: [oops}\n")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid YAML at line 2")
    tenant = f"{site.db[0]}yaml"
    yaml_box.fill(
        f"apiVersion: wharf.io/v1\nkind: Tenant\nmetadata: {{name: {tenant}}}\n"
        "spec: {quota: {cpu: '1'}, clusters: [lab1]}\n"
    )
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("status")).to_contain_text(f"Tenant {tenant} created")
    # Edit it as YAML: a bad quantity is refused and nothing changes; a good one lands.
    page.get_by_role("link", name=tenant).click()
    page.get_by_role("link", name="Edit YAML").click()
    editor = page.get_by_label("Manifest (YAML)")
    editor.fill(editor.input_value().replace("cpu: '1'", "cpu: lots"))
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("alert")).to_contain_text("spec.quota")
    assert site.admin.ok("GET", f"/api/v1/tenants/{tenant}")["spec"]["quota"] == {"cpu": "1"}
    editor.fill(editor.input_value().replace("cpu: lots", "cpu: '2'"))
    page.get_by_role("button", name="Apply").click()
    landed_on(page, f"Tenant {tenant}")
    quota = page.get_by_role("table", name="Tenant quota")
    expect(quota.get_by_role("row", name=re.compile(r"^cpu 2"))).to_be_visible()
    # Delete needs the name typed.
    page.get_by_text(f"Delete Tenant {tenant}").click()
    page.get_by_label(re.compile("to confirm")).fill("wrong")
    page.get_by_role("button", name="Delete Tenant").click()
    expect(page.get_by_role("alert")).to_contain_text(f"confirm={tenant}")
    page.go_back()
    page.get_by_text(f"Delete Tenant {tenant}").click()
    page.get_by_label(re.compile("to confirm")).fill(tenant)
    page.get_by_role("button", name="Delete Tenant").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    assert site.admin.get(f"/api/v1/tenants/{tenant}").status_code == 404
    # Users: a new viewer; a too-short password is refused and says so.
    page.get_by_role("link", name="Users").click()
    name = f"{site.db[0]}walt"
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label(re.compile("^Password")).fill("short")
    page.evaluate("document.getElementById('u-password').removeAttribute('minlength')")
    page.get_by_role("button", name="Create user").click()
    expect(page.get_by_role("alert")).to_contain_text("at least 8 characters")
    page.get_by_label(re.compile("^Password")).fill("long-enough-1")
    page.get_by_label(re.compile("^Platform role")).select_option("viewer")
    page.get_by_role("button", name="Create user").click()
    users = page.get_by_role("table", name="Users")
    expect(users.get_by_role("row", name=f"{name} viewer")).to_be_visible()


def test_viewer_reads_but_changes_nothing(site: Site, sign_in: Callable[..., Page]):
    page = sign_in("vera")
    page.goto(f"{site.url}/console/tenants/{site.retail}/projects/team")
    expect(page.get_by_role("heading", name="Project team")).to_be_visible()
    expect(page.get_by_role("link", name="Deliver an application")).to_have_count(0)
    page.goto(f"{site.url}/console/tenants/{site.retail}/projects/team/deliver")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    # Even a forged form post with her valid CSRF token is refused by the service.
    token = page.locator("meta[name=csrf-token]").get_attribute("content")
    answer: dict[str, Any] = page.evaluate(
        f"""async ([url, token]) => {{
            const body = new URLSearchParams({{csrf: token, name: "sneaky", tenant: "{site.retail}",
                                              cpu: "1", environment: "dev"}});
            const r = await fetch(url, {{method: "POST", body}});
            return {{status: r.status, text: await r.text()}};
        }}""",
        [f"{site.url}/console/projects/new", token],
    )
    assert answer["status"] == 403, answer
    assert site.admin.get(f"/api/v1/tenants/{site.retail}/projects/sneaky").status_code == 404


def test_changes_without_the_csrf_token_are_refused(site: Site, sign_in: Callable[..., Page]):
    page = sign_in("tina")
    cookie = next(c for c in page.context.cookies() if c["name"] == "wharf_session")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    jar = {"wharf_session": cookie["value"]}
    form = {"tenant": site.retail, "name": "forged", "cpu": "1", "environment": "dev"}
    for headers in ({}, {"X-CSRF-Token": "0" * 64}):
        answer = httpx.post(
            f"{site.url}/console/projects/new", data=form, cookies=jar, headers=headers
        )
        assert answer.status_code == 403
        assert "CSRF" in answer.text
    # The same holds for the REST API when it is reached with the session cookie.
    body = {"kind": "Project", "metadata": {"name": "forged"}, "spec": {}}
    answer = httpx.put(
        f"{site.url}/api/v1/tenants/{site.retail}/projects/forged", json=body, cookies=jar
    )
    assert answer.status_code == 403
    assert site.admin.get(f"/api/v1/tenants/{site.retail}/projects/forged").status_code == 404
    # Logging out ends the session on the server, not only in the browser.
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/console/login"))
    assert httpx.get(f"{site.url}/console/", cookies=jar).status_code == 303


def test_laptop_width_and_keyboard(site: Site, sign_in: Callable[..., Page]):
    page = sign_in("admin", ADMIN_PASSWORD)
    page.set_viewport_size({"width": 1024, "height": 700})
    page.goto(f"{site.url}/console/projects")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1024, f"the page scrolls sideways at laptop width ({width}px)"
    page.set_viewport_size({"width": 700, "height": 700})
    expect(page.get_by_role("columnheader", name="Environments")).to_be_hidden()
    # Keyboard: the skip link comes first and moves focus to the content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    # Every form control has a label.
    page.goto(f"{site.url}/console/audit")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
              .filter(e => !e.labels || e.labels.length === 0).map(e => e.name)"""
    )
    assert unlabelled == []


def _network_setup(site: Site) -> tuple[str, int]:
    """Ports in both clusters, a domain, a certificate near expiry, traffic rules, and two
    applications of retail's team: one exposed (node port, route with TLS), one with a volume."""
    admin, retail = site.admin, site.retail
    base = 31000 if site.db == "sqlite" else 31100  # the lab outlives each database's run
    for cluster in ("lab1", "lab2"):
        name = f"{retail}-{cluster}"
        admin.ok(
            "PUT",
            f"/api/v1/nodeportranges/{name}",
            json={
                "kind": "NodePortRange",
                "metadata": {"name": name},
                "spec": {"cluster": cluster, "tenant": retail, "first": base, "last": base + 9},
            },
        )
    suffix = f"{retail}.example.com"
    admin.ok(
        "PUT",
        f"/api/v1/domaingrants/{retail}",
        json={
            "kind": "DomainGrant",
            "metadata": {"name": retail},
            "spec": {"tenant": retail, "domains": [f"*.{suffix}"]},
        },
    )
    pem, key = certificate([f"*.{suffix}"], days=10)
    admin.ok(
        "PUT",
        f"/api/v1/tenants/{retail}/certificates/wild",
        json={
            "kind": "Certificate",
            "metadata": {"name": "wild"},
            "spec": {"certificate": pem, "key": key},
        },
    )
    rule = {"from": {"application": "edge"}, "to": {"application": "vault"}, "ports": [5432]}
    admin.ok(
        "PUT",
        f"/api/v1/tenants/{retail}/trafficpolicies/team",
        json={
            "kind": "TrafficPolicy",
            "metadata": {"name": "team"},
            "spec": {"defaultDeny": True, "allow": [rule]},
        },
    )
    apps = {
        "edge": {
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": "edge", "image": "registry.example/edge:1.0.0", "replicas": 0},
            "nodePorts": [{"service": "edge", "port": 80}],
            "routes": [{"host": f"shop.{suffix}", "service": "edge", "port": 80, "tls": "wild"}],
        },
        "vault": {
            "template": {"name": "stateful-service", "version": "1.0.0"},
            "values": {"name": "vault", "image": "registry.example/vault:1.0.0", "storage": "1Gi"},
            "config": {"secrets": {"db": {"PASSWORD": "s3cret"}}},  # shown masked: still listed
        },
    }
    for name, spec in apps.items():
        admin.ok(
            "PUT",
            f"/api/v1/tenants/{retail}/applications/{name}",
            json={
                "kind": "Application",
                "metadata": {"name": name},
                "spec": {"project": "team", "environment": "dev", **spec},
            },
        )
    return f"shop.{suffix}", base


def _ask(page: Page, source: str, target: str, port: str) -> None:
    form = page.get_by_role("form", name="May A reach B on a port")
    form.get_by_label("From", exact=True).fill(source)
    form.get_by_label("To", exact=True).fill(target)
    form.get_by_label("Port", exact=True).fill(port)
    form.get_by_role("button", name="Ask").click()


def test_network_and_storage_page_as_each_role(site: Site, sign_in: Callable[..., Page]):
    host, base = _network_setup(site)
    page = sign_in("tina")
    page.goto(f"{site.url}/console/tenants/{site.retail}")
    page.get_by_role("link", name="Network and storage").click()
    landed_on(page, f"Network and storage of {site.retail}")
    held = page.get_by_role("table", name="Node ports held")
    expect(held.get_by_role("row").filter(has_text="edge")).to_have_count(2)  # both clusters
    expect(held).to_contain_text(str(base))
    expect(page.get_by_role("list", name="Domains")).to_contain_text(f"*.{site.retail}.example.com")
    expect(page.get_by_role("table", name="Routes")).to_contain_text(host)
    expect(page.get_by_role("table", name="Certificates")).to_contain_text("expires in 9 days")
    expect(page.get_by_role("table", name="Default traffic")).to_contain_text("deny all but")
    rules = page.get_by_role("table", name="Who may talk to whom")
    expect(rules).to_contain_text("application edge")
    expect(rules).to_contain_text("application vault")
    expect(rules).to_contain_text("5432")
    volumes = page.get_by_role("table", name="Volumes")
    expect(volumes).to_contain_text("vault")
    expect(volumes).to_contain_text("1Gi")
    expect(page.get_by_role("table", name="Claims in the clusters")).to_be_visible()
    site.shot(page, "network")

    # May A reach B on port P? The form answers from the policies Wharf renders.
    for port, verdict in (("5432", "Allowed"), ("80", "Denied")):
        _ask(page, "team/edge", "team/vault", port)
        answer = page.get_by_role("status", name="Reachability answer")
        expect(answer).to_contain_text(f"{verdict}: team/edge → team/vault on port {port}")
        expect(answer.get_by_role("listitem").first).to_be_visible()  # the reasons
    _ask(page, "nonsense", "team/vault", "5432")
    expect(page.get_by_role("alert")).to_contain_text("(field from)")

    # A developer of team sees its ports and routes, not the tenant's certificates.
    dev = sign_in("dave")
    dev.goto(f"{site.url}/console/tenants/{site.retail}/projects/team")
    dev.get_by_role("link", name="Network and storage").click()
    expect(dev.get_by_role("table", name="Routes")).to_contain_text(host)
    expect(dev.get_by_role("table", name="Certificates")).to_contain_text("No certificates")
    _ask(dev, "hidden/app", "team/vault", "5432")  # a project it cannot see: not found
    expect(dev.get_by_role("alert")).to_contain_text("project 'hidden' not found")
    # Another tenant's admin learns nothing of it.
    other = sign_in("mona")
    other.goto(f"{site.url}/console/tenants/{site.retail}/network")
    expect(other.get_by_role("heading", name="Not found")).to_be_visible()
    expect(other.locator("body")).not_to_contain_text(host)


def axe_findings(page: Page) -> list[str]:
    """axe-core (from npm) on the page: its serious and critical WCAG 2 A/AA findings."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        """() => axe.run(document, {runOnly: {type: "tag",
                                              values: ["wcag2a", "wcag2aa", "wcag21aa"]}})"""
    )
    assert result["passes"], f"axe checked nothing on {page.url}"
    return [
        f"{v['id']}: {v['help']} ({len(v['nodes'])}x, e.g. {v['nodes'][0]['target']})"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_a_projects_images_page(
    site: Site, sign_in: Callable[..., Page], tmp_path_factory: pytest.TempPathFactory
):
    """Dave pushes to a real registry (Wharf its token server); the project's page leads to its
    images: repository, tag, digest, size and who pushed it. Another tenant's admin gets none."""
    assert AXE.is_file(), "axe-core is not installed (./dev setup runs npm ci)"
    workdir = tmp_path_factory.mktemp("console-registry")
    registry = RegistryProcess(workdir, f"console{site.db[0]}")
    body = {
        "kind": "Registry",
        "metadata": {"name": registry.name},
        "spec": {"url": registry.url, "service": registry.name},
    }
    site.admin.ok("PUT", f"/api/v1/registries/{registry.name}", json=body)
    bundle = httpx.get(f"{site.url}/api/v1/registry/certificate").json()["certificates"]
    registry.configure(site.admin.ok("GET", f"/api/v1/registries/{registry.name}/config"), bundle)
    registry.start()
    try:
        layout = oci_layout(workdir / "image", b"shown in the console\n")
        pushed = skopeo(
            "copy",
            "--dest-tls-verify=false",
            f"--dest-creds=dave:{PASSWORD}",
            f"oci:{layout}:latest",
            f"docker://{registry.host}/{site.retail}/team/web:1.0",
        )
        assert pushed.returncode == 0, pushed.stderr
        params = {"tenant": site.retail, "kind": "Image", "action": "push", "name": "web:1.0"}
        wait_for(
            lambda: site.admin.ok("GET", "/api/v1/audit", params=params)["items"],
            what="the push in the audit trail",
        )
        page = sign_in("dave")
        page.goto(f"{site.url}/console/tenants/{site.retail}/projects/team")
        page.get_by_role("link", name="Images of project team").click()
        expect(page.get_by_role("heading", name="Images of project team")).to_be_visible()
        row = page.get_by_role("table", name="Images").get_by_role("row").filter(has_text="1.0")
        expect(row).to_have_count(1)
        expect(row).to_contain_text(f"{site.retail}/team/web")
        expect(row).to_contain_text("sha256:")
        expect(row).to_contain_text("dave")
        expect(row).to_contain_text(re.compile(r"\d+ B|KiB"))
        assert axe_findings(page) == []
        site.shot(page, "images")
        # Another tenant's admin learns nothing of the project, its images least of all.
        other = sign_in("mona")
        other.goto(f"{site.url}/console/tenants/{site.retail}/projects/team/images")
        expect(other.get_by_role("alert")).to_contain_text("not found")
        expect(other.get_by_role("table", name="Images")).to_have_count(0)
    finally:
        registry.stop()
        site.admin.ok(
            "DELETE", f"/api/v1/registries/{registry.name}", params={"confirm": registry.name}
        )


def test_every_page_passes_an_automated_accessibility_audit(site: Site, sign_in):
    """axe-core (from npm) on each kind of page: no serious or critical WCAG 2 A/AA finding."""
    assert AXE.is_file(), "axe-core is not installed (./dev setup runs npm ci)"
    page = sign_in("admin", ADMIN_PASSWORD)
    paths = [
        "/console/",
        "/console/clusters",
        "/console/clusters/lab1",
        "/console/tenants",
        f"/console/tenants/{site.retail}",
        "/console/projects",
        f"/console/tenants/{site.retail}/projects/team",
        "/console/projects/new",
        f"/console/tenants/{site.retail}/projects/team/deliver",
        "/console/applications",
        "/console/audit",
        "/console/tokens",
        "/console/users",
        "/console/apply",
        f"/console/edit/Tenant/-/{site.retail}",
        f"/console/tenants/{site.retail}/network",
    ]
    apps = site.admin.ok("GET", f"/api/v1/tenants/{site.retail}/applications")["items"]
    paths += [f"/console/tenants/{site.retail}/applications/{a['metadata']['name']}" for a in apps]
    found = {}
    for path in paths:
        page.goto(site.url + path)
        page.add_script_tag(path=str(AXE))
        result = page.evaluate(
            """() => axe.run(document, {runOnly: {type: "tag",
                                                  values: ["wcag2a", "wcag2aa", "wcag21aa"]}})"""
        )
        bad = [
            f"{v['id']}: {v['help']} ({len(v['nodes'])}x, e.g. {v['nodes'][0]['target']})"
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        if bad:
            found[path] = bad
        assert result["passes"], f"axe checked nothing on {path}"
    assert found == {}


def _released_app(site: Site) -> str:
    """An application of retail's project `rel` (developer dave) whose second revision is a
    canary waiting for a promote in lab1, before lab2's wave."""
    admin, tenant = site.admin, site.retail
    admin.ok(
        "PUT",
        f"/api/v1/tenants/{tenant}/projects/rel",
        json={
            "kind": "Project",
            "metadata": {"name": "rel"},
            "spec": {
                "members": [{"user": "dave", "role": "developer"}],
                "quota": {"cpu": "2", "memory": "4Gi", "pods": "20"},
                "environments": [{"name": "dev", "clusters": ["lab1", "lab2"]}],
            },
        },
    )
    path = f"/api/v1/tenants/{tenant}/applications/shipit"
    for image in ("registry.example/shipit:1.0.0", "registry.example/shipit:1.1.0"):
        admin.ok(
            "PUT",
            path,
            json={
                "kind": "Application",
                "metadata": {"name": "shipit", "tenant": tenant},
                "spec": {
                    "project": "rel",
                    "environment": "dev",
                    "template": {"name": "web-service", "version": "1.0.0"},
                    "values": {"name": "shipit", "image": image, "replicas": 1},
                    "strategy": {
                        "type": "canary",
                        "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]},
                        "waves": [{"clusters": ["lab1"]}, {"clusters": ["lab2"]}],
                    },
                },
            },
        )

    def waiting() -> bool:
        answer = admin.get(f"{path}/release")
        body = answer.json() if answer.status_code == 200 else {}
        lab1 = body.get("clusters", {}).get("lab1", {})
        return body.get("revision") == 2 and lab1.get("phase") == "WaitingPromote"

    wait_for(waiting, timeout=120, what="the canary waiting for a promote in lab1")
    return path


def test_the_release_timeline_updates_live_and_only_its_tenant_sees_it(
    site: Site, sign_in: Callable[..., Page]
):
    api_path = _released_app(site)
    url = f"{site.url}/console/tenants/{site.retail}/applications/shipit/release"
    page = sign_in("dave")
    page.goto(f"{site.url}/console/tenants/{site.retail}/applications/shipit")
    page.get_by_role("link", name="Release timeline").click()
    expect(page.get_by_role("heading", name="Release of shipit")).to_be_visible()
    timeline = page.get_by_role("table", name="Release timeline")

    def row(cluster: str, step: int | str) -> Any:
        return timeline.locator(f'tr[data-cluster="{cluster}"][data-step="{step}"]')

    expect(row("lab1", 0)).to_contain_text("setWeight 50")
    expect(row("lab1", 0)).to_contain_text("Passed")
    expect(row("lab1", 1)).to_contain_text("pause until promoted")
    expect(row("lab1", 1)).to_contain_text("WaitingPromote")
    expect(row("lab2", "")).to_contain_text("Pending")
    site.shot(page, "release-timeline")

    # A promote elsewhere (the API) reaches the open page without a reload.
    page.evaluate("window.stayed = true")
    site.admin.ok("POST", f"{api_path}/release/promote")
    expect(row("lab1", 2)).to_be_visible(timeout=LIVE)
    expect(row("lab2", 1)).to_contain_text("WaitingPromote", timeout=LIVE)
    assert page.evaluate("window.stayed") is True, "the page reloaded; the timeline must be live"

    # Another tenant's admin learns nothing: the page and its stream are 404.
    stranger = sign_in("mona")
    for address in (url, f"{url}/stream"):
        answer = stranger.goto(address)
        assert answer is not None
        assert answer.status == 404, address
