"""Wiring: the database, the kinds and their rules, cluster connections and the controllers.

Everything the API and the controllers share is built here once per server process.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
from collections.abc import Awaitable, Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.orm import Session

from wharf import __version__
from wharf.alerts.controller import Alerting, ChannelSender, RuleFileController
from wharf.alerts.service import AlertRuleRules, NotificationChannelRules
from wharf.apps.controller import DeliveryController
from wharf.apps.service import ApplicationRules, AppTemplateRules, seed_catalog
from wharf.clusters.controller import ClusterController
from wharf.clusters.service import ClusterRules, NodePoolRules
from wharf.core.config import Settings
from wharf.core.controller import Controller, cancel
from wharf.core.crypto import bearer_token, box_for
from wharf.core.leases import CLUSTER_PREFIX, PLATFORM, LeaseBook, cluster_lease
from wharf.core.logging import get_logger
from wharf.core.net import OutboundPolicy, networks
from wharf.identity import service as identity
from wharf.identity.throttle import LoginThrottle
from wharf.kube.connections import ClusterConnections, ClusterTimeouts
from wharf.kube.kubeconfig import AddressPolicy
from wharf.logs.controller import LogRetentionController
from wharf.logs.service import LogRetention, LogStoreClient
from wharf.monitoring.service import WorkloadFeed
from wharf.network.service import (
    CertificateRules,
    DomainGrantRules,
    NodePortRangeRules,
    TrafficPolicyRules,
    application_node_ports,
    namespace_additions,
)
from wharf.registry.controller import ReplicationController, RetentionController
from wharf.registry.service import (
    ImmutableTagsRules,
    RegistryRules,
    ReplicationRules,
    RetentionRules,
    RobotRules,
    SignaturePolicyRules,
    TokenSigner,
    pull_secret_objects,
)
from wharf.releases.controller import ReleaseController, WebhookSender
from wharf.releases.service import (
    RELEASE,
    AnalysisTemplateRules,
    ReleaseWebhookRules,
    drop_releases,
    pinned,
)
from wharf.resources.service import KindRules, ResourceService
from wharf.scaling.controller import ScheduleController
from wharf.scaling.model import applied_window
from wharf.server.leases import LeaseKeeper
from wharf.store import Database
from wharf.store.audit import AuditEvent, record
from wharf.store.changes import USER, Change, ChangeChannel
from wharf.store.resources import LabelIn, ResourceStore
from wharf.tenancy.controller import PlacementController
from wharf.tenancy.model import (
    PROJECT_LABEL,
    NamespaceAdditions,
    namespace_name,
    owner_labels,
    parse_retention,
)
from wharf.tenancy.service import ProjectRules, TenantRules

log = get_logger("wharf.platform")
CONTROLLER_THREADS = 32  # threads for the controllers' database calls

Keys = Callable[[], Awaitable[Iterable[Hashable]]]


def _while_held(list_keys: Keys, book: LeaseBook) -> Keys:
    """A platform-wide controller lists its keys only on the replica holding their lease."""

    async def listed() -> Iterable[Hashable]:
        return await list_keys() if book.lease(PLATFORM) is not None else []

    return listed


class Platform:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        box = box_for(settings.secret_key, settings.key_file(), settings.previous_secret_keys)
        self.box = box
        self.log_store_retention = parse_retention(
            settings.log_store_retention, "WHARF_LOG_STORE_RETENTION"
        )
        self.token_signer = TokenSigner(
            box, settings.registry_token_issuer, settings.registry_token_seconds
        )
        policy = AddressPolicy(allow_loopback=settings.allow_loopback_clusters)
        self.cluster_rules = ClusterRules(box, policy)
        self.application_rules = ApplicationRules(box, self.token_signer)
        self.application_rules.forget.append(drop_releases)
        self.certificate_rules = CertificateRules(box)
        self.outbound = OutboundPolicy(networks(settings.outbound_allow))
        self.webhook_rules = ReleaseWebhookRules(box, self.outbound)
        self.channel_rules = NotificationChannelRules(box, self.outbound)
        self.rules: list[KindRules[Any]] = [
            self.cluster_rules,
            NodePoolRules(),
            TenantRules(self.log_store_retention),
            ProjectRules(),
            AppTemplateRules(),
            self.application_rules,
            RegistryRules(),
            RobotRules(),
            RetentionRules(),
            ImmutableTagsRules(),
            SignaturePolicyRules(),
            ReplicationRules(),
            AnalysisTemplateRules(settings.prometheus_url, self.outbound),
            self.webhook_rules,
            NodePortRangeRules(),
            DomainGrantRules(),
            self.certificate_rules,
            TrafficPolicyRules(),
            AlertRuleRules(settings.prometheus_url),
            self.channel_rules,
        ]
        self.resources = ResourceService(db, {r.kind.name: r for r in self.rules})
        self.connections = ClusterConnections(
            policy,
            ClusterTimeouts(settings.cluster_request_timeout, settings.watch_timeout_seconds),
            user_agent=f"wharf/{__version__} (replica {settings.replica})",
        )
        self.login_throttle = LoginThrottle()
        # Several replicas share one PostgreSQL by leases; SQLite's one process holds them all.
        self.leases = LeaseBook(settings.replica, sole=db.dialect != "postgresql")
        self.clusters = ClusterController(
            self.resources,
            self.cluster_rules,
            self.connections,
            heartbeat=settings.heartbeat_seconds,
            probe_timeout=settings.cluster_probe_timeout,
        )
        self.placement = PlacementController(
            self.resources,
            self.cluster_rules,
            self.connections,
            resync=settings.resync_seconds,
            additions=[namespace_additions, self._pull_secrets],
            share=self.leases,
        )
        self.delivery = DeliveryController(
            self.resources,
            self.application_rules,
            self.certificate_rules,
            self.cluster_rules,
            self.connections,
            resync=settings.resync_seconds,
            pinned=pinned,
            window=lambda app: applied_window(app.status),
            failover_grace=settings.failover_grace_seconds,
            share=self.leases,
        )
        self.releases = ReleaseController(
            self.resources,
            self.cluster_rules,
            self.connections,
            settings.prometheus_url,
            redeliver=self.delivery.controller.queue.add,
            resync=settings.resync_seconds,
            outbound=self.outbound,
            caches=self.delivery.caches,
        )
        self.delivery.delivered.append(self.releases.delivered)
        self.webhooks = WebhookSender(self.resources, self.webhook_rules, self.outbound)
        self.replication = ReplicationController(
            self.resources, self.token_signer, resync=settings.resync_seconds
        )
        self.retention = RetentionController(
            self.resources, self.token_signer, resync=settings.resync_seconds
        )
        self.log_retention = LogRetentionController(
            LogRetention(
                self.resources,
                LogStoreClient(settings.log_store_url),
                self.log_store_retention,
                dt.timedelta(seconds=settings.log_retention_seconds),
            ),
            resync=settings.resync_seconds,
        )
        self.schedules = ScheduleController(
            self.resources, redeliver=self.delivery.controller.queue.add
        )
        self.rule_files = RuleFileController(
            self.resources,
            settings.alert_rules_dir,
            settings.prometheus_url,
            resync=settings.resync_seconds,
        )
        smtp = (settings.smtp_host, settings.smtp_port, settings.smtp_from)
        self.channels = ChannelSender(self.resources, self.channel_rules, self.outbound, smtp)
        self.alerting = Alerting(
            bearer_token(settings.receiver_token_file()), settings.alertmanager_url, self.channels
        )
        # What Prometheus scrapes at /metrics/workloads, from the delivery controller's watches.
        self.workload_feed = WorkloadFeed(db, self.delivery.watches, self.connections.cached)
        self._tasks: list[asyncio.Task[Any]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.lease_keeper = LeaseKeeper(db, self.leases, settings.lease_seconds, self._gained)
        self._lease_work()
        # A write one replica takes wakes the replica holding its work (PostgreSQL's NOTIFY).
        self.changes = ChangeChannel(db, settings.replica)
        self._kinds = {r.kind.name for r in self.rules} | {RELEASE}  # what a change may name
        self.clusters.on_phase = self._cluster_phase

    def _cluster_phase(self) -> None:
        """A cluster went or came back: where applications' replicas run (failover) and
        which clusters a project's namespaces are on follow."""
        self.delivery.controller.queue_all()
        self.placement.controller.queue_all()

    def _platform_wide(self) -> list[Controller]:
        """The controllers whose work is not one cluster's (registries, releases, windows)."""
        return [
            self.replication.controller,
            self.retention.controller,
            self.releases.controller,
            self.schedules.controller,
            self.rule_files.controller,
            self.log_retention.controller,
        ]

    def _split_by_cluster(self) -> list[Controller]:
        """The controllers that write into clusters key by key (a project's namespaces, an
        application's objects): every replica reconciles each key for the clusters whose
        lease it holds (and the platform lease's holder does the platform-wide part)."""
        return [self.placement.controller, self.delivery.controller]

    def _lease_work(self) -> None:
        """Each controller works only under its lease: the cluster controller per cluster,
        placement and delivery per cluster inside each key (they read the book themselves),
        the others under the platform-wide one (their work spans clusters)."""
        book = self.leases
        self.clusters.controller.lease_for = lambda key: book.lease(cluster_lease(str(key)))
        for controller in self._platform_wide():
            controller.lease_for = lambda _key: book.lease(PLATFORM)
            controller.list_keys = _while_held(controller.list_keys, book)

    def _gained(self, lease: str) -> None:
        """A lease new to this replica: look at all of its work now."""
        if lease == PLATFORM:
            for controller in self._platform_wide():
                controller.queue_all()
        elif lease.startswith(CLUSTER_PREFIX):
            self.clusters.controller.queue.add(lease.removeprefix(CLUSTER_PREFIX))
        for controller in self._split_by_cluster():
            controller.queue_all()

    def cluster_owners(self) -> dict[str, int]:
        """The clusters this replica reconciles now, with their lease's epoch (for /metrics)."""
        owned = {}
        for name in self.leases.names():
            lease = self.leases.lease(name)
            if lease is not None and name.startswith(CLUSTER_PREFIX):
                owned[name.removeprefix(CLUSTER_PREFIX)] = lease.epoch
        return owned

    def lease_holders(self) -> dict[str, str]:
        """Which replica holds each lease, as this replica last saw it."""
        return dict(self.lease_keeper.holders)

    def controllers(self) -> list[Controller]:
        return [
            self.clusters.controller,
            self.placement.controller,
            self.delivery.controller,
            self.replication.controller,
            self.retention.controller,
            self.releases.controller,
            self.schedules.controller,
            self.rule_files.controller,
            self.log_retention.controller,
        ]

    def reconciles_per_cluster(self) -> dict[str, dict[str, int]]:
        """Each controller's reconciles of one cluster's work, by cluster (for /metrics)."""
        return {
            "clusters": dict(self.clusters.per_cluster),
            "placement": dict(self.placement.per_cluster),
            "delivery": dict(self.delivery.per_cluster),
        }

    def bootstrap(self) -> str | None:
        """Make the first user, `admin`, a platform admin, and the built-in catalog; return a
        generated password."""
        with self.db.exclusive() as session:  # replicas starting together make one admin
            seed_catalog(session)
            if identity.list_users(session):
                return None
            password = self.settings.admin_password or secrets.token_urlsafe(12)
            identity.create_user(session, "admin", password)
            identity.grant(session, "admin", "platform-admin")
        return None if self.settings.admin_password else password

    def rotate_secrets(self) -> dict[str, int]:
        """Re-seal every sealed value under the current key (a transaction per object, the row
        locked); how many objects of each kind were re-sealed. Run again, it re-seals nothing."""
        counts: dict[str, int] = {}
        for rules in (
            self.cluster_rules,
            self.application_rules,
            self.certificate_rules,
            self.webhook_rules,
            self.channel_rules,
        ):
            kind = rules.kind.name
            with self.db.reader() as session:
                keys = [(r.tenant, r.name) for r in ResourceStore(session).query(kind)]
            counts[kind] = 0
            for tenant, name in keys:
                with self.db.session() as session:
                    store = ResourceStore(session)
                    stored = store.get(kind, tenant, name, lock=True)
                    spec = rules.reseal(stored) if stored is not None else None
                    if stored is not None and spec is not None:
                        store.reseal(stored, spec)
                        record(
                            session,
                            AuditEvent("wharf", "", "reseal", kind, tenant, name, "allowed"),
                        )
                        counts[kind] += 1
        return counts

    def _pull_secrets(
        self, session: Session, tenant: str, project: str, env: str, _cluster: str
    ) -> NamespaceAdditions:
        """What the registry capability adds to every project namespace: its pull secret."""
        store = ResourceStore(session)
        held = store.get("Project", tenant, project)
        if held is None:
            return NamespaceAdditions()
        namespace = namespace_name(tenant, project, env)
        labels = owner_labels(tenant, project, env)
        registries = store.query("Registry")
        return NamespaceAdditions(
            objects=pull_secret_objects(self.box, registries, held, namespace, labels)
        )

    def _on_change(self, kind: str, tenant: str, name: str) -> None:
        """Runs in the API's worker thread: hand the key to the controllers' event loop."""
        loop = self._loop
        if loop is None:
            return
        if kind == "Project":
            loop.call_soon_threadsafe(self.placement.controller.queue.add, (tenant, name))
            # Its applications are delivered from its environments: those, and no others
            # (a sweep of every cluster for each project edit kept the event loop busy).
            loop.call_soon_threadsafe(self._deliver_applications_of, tenant, name)
        elif kind == "Cluster":
            loop.call_soon_threadsafe(self.clusters.controller.queue.add, name)
        elif kind == "Application":
            loop.call_soon_threadsafe(self.delivery.controller.queue.add, (tenant, name))
            loop.call_soon_threadsafe(self.releases.controller.queue.add, (tenant, name))
            loop.call_soon_threadsafe(self.schedules.controller.queue.add, (tenant, name))
            # Its node ports and hosts are listed on its namespaces, which the placement keeps.
            project = self._placement_of_application(tenant, name)
            if project:
                loop.call_soon_threadsafe(self.placement.controller.queue.add, (tenant, project))
        elif kind == RELEASE:  # an operation on a release that delivery need not follow
            loop.call_soon_threadsafe(self.releases.controller.queue.add, (tenant, name))
        elif kind == "ReplicationRule":
            loop.call_soon_threadsafe(self.replication.controller.queue.add, (tenant, name))
        elif kind == "TrafficPolicy":  # named after its project, whose namespaces hold it
            loop.call_soon_threadsafe(self.placement.controller.queue.add, (tenant, name))
        elif kind == "AlertRule":
            loop.call_soon_threadsafe(self.rule_files.controller.queue.add, (tenant, name))
        elif kind == "RetentionPolicy":
            loop.call_soon_threadsafe(self.retention.controller.queue.add, (tenant, name))
        if kind == "Tenant":  # its log retention may have changed
            loop.call_soon_threadsafe(self.log_retention.controller.queue.add, name)
        if kind in ("Tenant", "Cluster", "NodePool", "Registry"):
            # Membership, quota or reachability may change any project's namespaces.
            loop.call_soon_threadsafe(self.placement.controller.queue_all)
        if kind in ("Cluster", "AppTemplate"):
            loop.call_soon_threadsafe(self.delivery.controller.queue_all)

    def _deliver_applications_of(self, tenant: str, project: str) -> None:
        """Queue a project's applications for delivery (runs in the controllers' loop)."""

        async def queue() -> None:
            try:
                keys = await asyncio.to_thread(self._applications_of, tenant, project)
            except Exception as exc:  # the periodic resync looks at them all anyway
                log.warning("could not list a project's applications", error=str(exc))
                return
            for key in keys:
                self.delivery.controller.queue.add(key)

        task = asyncio.get_running_loop().create_task(queue())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _applications_of(self, tenant: str, project: str) -> list[tuple[str, str]]:
        scope = [(tenant, LabelIn(PROJECT_LABEL, frozenset([project])))]
        with self.db.reader() as session:
            store = ResourceStore(session)
            live = store.query("Application", scopes=scope)
            deleting = store.query("Application", scopes=scope, deleting=True)
            return [(a.tenant, a.name) for a in live + deleting]

    def user_changed(self, name: str) -> None:
        """A user was disabled or enabled: the member ServiceAccounts that carry its access
        into the clusters follow (runs in the API's worker thread), here and on the other
        replicas."""
        self._user_changed(name)
        self.changes.tell(USER, "", name)

    def _heard(self, change: Change) -> None:
        """Another replica took a write: wake what it concerns here (not told on again;
        runs in a worker thread, as the API's own changes do)."""
        if change.kind == USER:
            self._user_changed(change.name)
        elif change.kind in self._kinds:
            self._on_change(change.kind, change.tenant, change.name)

    def _missed(self) -> None:
        """The other replicas' changes may have gone unheard (the listener's connection
        broke): look at everything this replica holds."""
        for controller in self.controllers():
            controller.queue_all()

    def _user_changed(self, _name: str) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self.placement.controller.queue_all)

    def _placement_of_application(self, tenant: str, name: str) -> str:
        """The project whose namespaces an application's change may change, or "" when it
        cannot: a new one that holds no node port and serves no host adds nothing to them
        (placing the project again for each such application slowed delivery down)."""
        with self.db.reader() as session:
            app = ResourceStore(session).get("Application", tenant, name, with_deleting=True)
            if app is None:
                return ""
            new = app.generation == 1 and app.deleting_since is None
            if (
                new
                and not app.spec.get("routes")
                and not application_node_ports(session, tenant, name)
            ):
                return ""
            return str(app.spec.get("project", ""))

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Controllers read and write the database in threads; the default pool (CPUs + 4)
        # made concurrent releases queue for a thread behind each other's writes.
        self._loop.set_default_executor(
            ThreadPoolExecutor(max_workers=CONTROLLER_THREADS, thread_name_prefix="wharf")
        )
        self.resources.listeners.append(self._on_change)
        self.resources.listeners.append(self.changes.tell)
        if self.settings.controllers:
            self._tasks = [
                asyncio.create_task(self.changes.listen(self._heard, self._missed), name="changes"),
                asyncio.create_task(self.lease_keeper.run(), name="leases"),
                asyncio.create_task(self.clusters.controller.run(), name="clusters"),
                asyncio.create_task(self.placement.controller.run(), name="placement"),
                asyncio.create_task(self.delivery.controller.run(), name="delivery"),
                asyncio.create_task(self.replication.controller.run(), name="replication"),
                asyncio.create_task(self.retention.controller.run(), name="retention"),
                asyncio.create_task(self.releases.controller.run(), name="releases"),
                asyncio.create_task(self.schedules.controller.run(), name="schedules"),
                asyncio.create_task(self.webhooks.run(), name="release-webhooks"),
                asyncio.create_task(self.rule_files.controller.run(), name="alert-rules"),
                asyncio.create_task(self.log_retention.controller.run(), name="log-retention"),
                asyncio.create_task(self.channels.run(), name="incident-channels"),
            ]

    async def stop(self) -> None:
        await cancel(self._tasks)
        if self.settings.controllers:
            with contextlib.suppress(Exception):  # the database gone: the leases expire
                await asyncio.to_thread(self.lease_keeper.give_back)
        await self.clusters.stop()
        await self.placement.stop()
        await self.delivery.stop()
        await self.releases.stop()
        await self.webhooks.stop()
        await self.rule_files.stop()
        await self.channels.stop()
        await self.connections.close()
