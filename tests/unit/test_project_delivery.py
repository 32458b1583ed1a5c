"""A project's change is delivered to its own applications: the platform queues them, and
neither every application nor a sweep of every cluster (which, for each project edit, listed
what Wharf owns in every cluster on the controllers' event loop, next to the API's requests)."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable

from wharf.apps.model import RELEASE_ROLE
from wharf.core.controller import WorkQueue
from wharf.identity.model import Grant, Principal
from wharf.server.platform import Platform
from wharf.store.resources import ResourceStore
from wharf.tenancy.model import APP_LABEL, PROJECT_LABEL, TENANT_LABEL

ADMIN = Principal("admin", frozenset({Grant("platform-admin")}))


def _manifest(kind: str, name: str, tenant: str = "") -> dict[str, object]:
    metadata = {"name": name, **({"tenant": tenant} if tenant else {})}
    return {"apiVersion": "wharf.io/v1", "kind": kind, "metadata": metadata, "spec": {}}


def test_a_project_change_queues_its_own_applications_and_sweeps_nothing(
    idle_platform: Platform,
) -> None:
    platform = idle_platform
    db = platform.db
    platform.resources.apply(ADMIN, _manifest("Tenant", "acme"))
    for project in ("shop", "blog"):
        platform.resources.apply(ADMIN, _manifest("Project", project, "acme"))
    with db.session() as session:  # applications as their service stores them: labelled
        store = ResourceStore(session)
        for project, app in (("shop", "web"), ("shop", "api"), ("blog", "feed")):
            store.create(
                "Application", "acme", app, labels={PROJECT_LABEL: project}, annotations={}, spec={}
            )
    sweeps: list[str] = []

    async def every_application() -> Iterable[Hashable]:
        sweeps.append("swept")
        return [("acme", "web"), ("acme", "api"), ("acme", "feed")]

    platform.delivery.controller.list_keys = every_application
    queue = platform.delivery.controller.queue

    async def run() -> set[Hashable]:
        platform.start()
        platform.resources.apply(
            ADMIN,
            {
                **_manifest("Project", "shop", "acme"),
                "metadata": {"name": "shop", "tenant": "acme", "labels": {"team": "a"}},
            },
        )
        queued: set[Hashable] = set()
        async with asyncio.timeout(30):
            while len(queued) < 2:
                queued.add(await queue.get())
        for _ in range(20):  # let anything else the change set off run
            await asyncio.sleep(0)
        while len(queue):
            queued.add(await queue.get())
        await platform.stop()
        return queued

    assert asyncio.run(run()) == {("acme", "web"), ("acme", "api")}
    assert sweeps == []


def test_a_pod_outside_its_tenants_namespaces_wakes_no_application(
    idle_platform: Platform,
) -> None:
    """A tenant's pod labelled as another tenant's application (or one made up) queued that
    application from delivery's watch, without limit (the hostile review): only an object in
    its own tenant's namespaces wakes its application."""
    delivery = idle_platform.delivery

    def pod(namespace: str, labels: dict[str, str]) -> dict[str, object]:
        return {"metadata": {"name": "p", "namespace": namespace, "labels": labels}}

    async def queued(event: str, obj: dict[str, object]) -> int:
        delivery.controller.queue = WorkQueue()
        delivery.watch_event(event, obj)
        return len(delivery.controller.queue)

    theirs = {TENANT_LABEL: "globex", APP_LABEL: "web"}
    assert asyncio.run(queued("MODIFIED", pod("globex--shop-dev", theirs))) == 1
    assert asyncio.run(queued("MODIFIED", pod("acme--shop-dev", theirs))) == 0
    assert asyncio.run(queued("ADDED", pod("globexx--shop-dev", theirs))) == 0
    assert asyncio.run(queued("ADDED", pod("acme--shop-dev", {APP_LABEL: "web"}))) == 0
    canary = {**theirs, RELEASE_ROLE: "canary"}
    assert asyncio.run(queued("MODIFIED", pod("globex--shop-dev", canary))) == 0


def test_a_status_only_change_queues_its_application_once_after_a_delay(
    idle_platform: Platform,
) -> None:
    """A pod starting or a rollout's count changing shows in the application's status: a
    burst of them (every pod of a delivery) reconciled the application back to back; now it
    is looked at once, a moment later. The tenant's namespaces still bound what wakes what."""
    delivery = idle_platform.delivery

    def pod(namespace: str, labels: dict[str, str]) -> dict[str, object]:
        return {"metadata": {"name": "p", "namespace": namespace, "labels": labels}}

    theirs = {TENANT_LABEL: "globex", APP_LABEL: "web"}

    async def burst() -> tuple[int, list[Hashable]]:
        delivery.controller.queue = queue = WorkQueue()
        for _ in range(30):
            delivery.status_event("MODIFIED", pod("globex--shop-dev", theirs))
            delivery.status_event("MODIFIED", pod("acme--shop-dev", theirs))
            delivery.status_event(
                "MODIFIED", pod("globex--shop-dev", {**theirs, RELEASE_ROLE: "canary"})
            )
        waiting = len(queue)
        handed = []
        async with asyncio.timeout(30):
            handed.append(await queue.get())
        queue.done(handed[0])
        for _ in range(20):
            await asyncio.sleep(0)
        return waiting, [*handed, *([await queue.get()] if len(queue) else [])]

    waiting, handed = asyncio.run(burst())
    assert waiting == 1
    assert handed == [("globex", "web")]
