"""The console in a real browser: Debian's Chromium, driven by Playwright (no downloaded browser).

A real `wharf server` with the lab's clusters registered; screenshots go to artifacts/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.integration.conftest import ADMIN_PASSWORD, ServerProcess, register_clusters, wait_for

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.fixture(scope="module")
def server(lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ServerProcess(tmp_path_factory.mktemp("console")) as process:
        admin = process.login()
        register_clusters(admin, lab)
        for tenant in ("retail", "media"):
            admin.ok(
                "PUT",
                f"/api/v1/tenants/{tenant}",
                json={
                    "kind": "Tenant",
                    "metadata": {"name": tenant},
                    "spec": {"quota": {"cpu": "8"}, "clusters": ["lab1", "lab2"]},
                },
            )
            admin.ok(
                "PUT",
                f"/api/v1/tenants/{tenant}/projects/web",
                json={
                    "kind": "Project",
                    "metadata": {"name": "web"},
                    "spec": {
                        "quota": {"cpu": "2"},
                        "environments": [{"name": "dev", "clusters": ["lab1", "lab2"]}],
                    },
                },
            )
        yield process.url


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


def test_an_admin_logs_in_and_sees_projects_placed(server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{server}/console/")
    expect(page).to_have_url(f"{server}/console/login")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")

    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.keyboard.press("Enter")  # the form works from the keyboard
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    table = page.get_by_role("table", name="Projects")
    expect(table.get_by_role("row")).to_have_count(3)  # header + two projects
    # The controllers place both projects; a reload shows them Ready.
    wait_for(
        lambda: page.reload() is not None and page.get_by_role("cell", name="Ready").count() == 2,
        timeout=60,
        what="both projects Ready in the console",
    )
    page.screenshot(path=str(ARTIFACTS / "console-projects.png"), full_page=True)

    page.get_by_label("Tenant").select_option("media")
    expect(table.get_by_role("row")).to_have_count(2)
    expect(table.get_by_role("cell", name="media")).to_be_visible()

    # Laptop width: the wide columns give way, the page still works.
    page.set_viewport_size({"width": 640, "height": 800})
    expect(page.get_by_role("columnheader", name="Environments")).to_be_hidden()
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{server}/console/login")
    page.goto(f"{server}/console/")
    expect(page).to_have_url(f"{server}/console/login")
    page.close()
