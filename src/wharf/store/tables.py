"""The tables. Wharf's own resources share one generic table; identity and audit have theirs."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

metadata = MetaData()

# BigInteger primary keys autoincrement on PostgreSQL; SQLite needs INTEGER for rowid aliasing.
Id = BigInteger().with_variant(Integer(), "sqlite")

resources = Table(
    "resources",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("tenant", String(64), nullable=False, server_default=""),  # "" = platform scope
    Column("name", String(128), nullable=False),
    Column("uid", String(36), nullable=False, unique=True),
    Column("generation", Integer, nullable=False),
    Column("resource_version", Integer, nullable=False),
    Column("labels", JSON, nullable=False),
    Column("annotations", JSON, nullable=False),
    Column("spec", JSON, nullable=False),
    Column("status", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Set when a delete was acknowledged: the row stays, hidden from reads, until the owning
    # controller has removed what the object owns in the clusters.
    Column("deleting_since", DateTime(timezone=True), nullable=True),
    UniqueConstraint("kind", "tenant", "name", name="uq_resources_kind_tenant_name"),
    Index("ix_resources_tenant_kind", "tenant", "kind"),
)

# One row per label, so that label selectors run as indexed SQL.
resource_labels = Table(
    "resource_labels",
    metadata,
    Column("resource_id", Id, ForeignKey("resources.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(317), primary_key=True),
    Column("value", String(63), nullable=False),
    Index("ix_resource_labels_key_value", "key", "value"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("time", DateTime(timezone=True), nullable=False, index=True),
    Column("actor", String(128), nullable=False),
    Column("source", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("tenant", String(64), nullable=False, server_default=""),
    Column("project", String(64), nullable=False, server_default=""),
    Column("name", String(128), nullable=False),
    Column("outcome", String(16), nullable=False),  # allowed | denied | failed
    Column("reason", Text, nullable=False, server_default=""),
    Column("diff", JSON, nullable=False),
    Index("ix_audit_events_tenant_time", "tenant", "time"),
    Index("ix_audit_events_tenant_project", "tenant", "project"),
)

users = Table(
    "users",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("password_hash", String(255), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("disabled", Boolean, nullable=False, server_default=false()),
    # Moves at each disable: names the user's ServiceAccounts in the clusters (see
    # tenancy.guard.member_account), so an enable never brings an old one back.
    Column("generation", Integer, nullable=False, server_default=text("0")),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user", String(64), ForeignKey("users.name", ondelete="CASCADE"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("scope", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Index("ix_api_tokens_user", "user"),
)

# Who holds which role where; rebuilt from tenant and project specs, or granted at platform scope.
memberships = Table(
    "memberships",
    metadata,
    Column("user", String(64), primary_key=True),
    Column("role", String(32), primary_key=True),
    Column("tenant", String(64), primary_key=True, server_default=""),
    Column("project", String(64), primary_key=True, server_default=""),
    Index("ix_memberships_scope", "tenant", "project"),
)

# Every delivery of an application: what was asked (template, values, overrides, configuration).
revisions = Table(
    "revisions",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("application", String(128), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("reason", String(255), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# A release of one application revision through the clusters of its environment: the state
# machine (waves, each cluster's step and phase) is one JSON document, written before it acts.
releases = Table(
    "releases",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("application", String(128), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("stable_revision", Integer, nullable=False),
    Column("phase", String(32), nullable=False),
    Column("paused", Boolean, nullable=False, server_default=false()),
    Column("version", Integer, nullable=False, server_default="1"),  # optimistic concurrency
    Column("state", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant", "application", "revision", name="uq_releases_app_revision"),
)

# Each analysis measurement, stored before the release acts on it.
release_measurements = Table(
    "release_measurements",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("release_id", Id, ForeignKey("releases.id", ondelete="CASCADE"), nullable=False),
    Column("cluster", String(64), nullable=False),
    Column("step", Integer, nullable=False),
    Column("template", String(128), nullable=False),
    Column("metric", String(128), nullable=False),
    Column("phase", String(16), nullable=False),
    Column("value", Text, nullable=True),
    Column("message", Text, nullable=False, server_default=""),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_release_measurements_release", "release_id", "cluster", "step"),
)

# Release events accepted for a project's webhooks, kept until delivered (an outbox: written
# in the transaction that stored the release's step, sent and retried with back-off after).
release_notifications = Table(
    "release_notifications",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("webhook", String(128), nullable=False),
    Column("event", String(32), nullable=False),
    Column("body", JSON, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_release_notifications_due", "delivered_at", "next_at"),
)

# Names that must be unique across the whole platform (a namespace name in every cluster, an
# object an application renders): held by one resource, reserved in the transaction that writes it.
claims = Table(
    "claims",
    metadata,
    Column("register", String(32), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("holder_kind", String(64), nullable=False),
    Column("holder_tenant", String(64), nullable=False),
    Column("holder_name", String(128), nullable=False),
    Index("ix_claims_holder", "holder_kind", "holder_tenant", "holder_name"),
)

# The NodePort register: one row per port given out in a cluster. The primary key (cluster,
# port) is what makes two Services in one cluster never get the same port, also when requests
# race; each row says which application's Service port holds it.
node_ports = Table(
    "node_ports",
    metadata,
    Column("cluster", String(64), primary_key=True),
    Column("port", Integer, primary_key=True, autoincrement=False),
    Column("tenant", String(64), nullable=False),
    Column("project", String(64), nullable=False),
    Column("namespace", String(128), nullable=False),
    Column("application", String(128), nullable=False),
    Column("service", String(128), nullable=False),
    Column("service_port", Integer, nullable=False),
    Index("ix_node_ports_holder", "tenant", "application"),
    Index("ix_node_ports_namespace", "cluster", "namespace"),
)

# Who reconciles what when several servers share this database: one row per piece of work
# (a cluster, or the platform-wide controllers), held by one replica until `expires_at`.
# `epoch` grows at every change of holder: a write checks it (see wharf.store.leases).
leases = Table(
    "leases",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("renewed_at", DateTime(timezone=True), nullable=False),
)

# Incidents: what Alertmanager reported for a project's alert rule, one per rule, application
# and cluster while it is not resolved, with people's acknowledgements, assignee and notes.
incidents = Table(
    "incidents",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("project", String(64), nullable=False),
    Column("rule", String(128), nullable=False),
    Column("application", String(128), nullable=False, server_default=""),
    Column("cluster", String(64), nullable=False, server_default=""),
    Column("state", String(16), nullable=False),
    Column("severity", String(16), nullable=False, server_default="warning"),
    Column("summary", Text, nullable=False, server_default=""),
    Column("assignee", String(64), nullable=False, server_default=""),
    Column("labels", JSON, nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_incidents_group", "tenant", "rule", "application", "cluster", "state"),
    Index("ix_incidents_tenant", "tenant", "project", "state"),
)

# An incident's timeline: each change of state, assignee, and each note, with who did it.
incident_events = Table(
    "incident_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("incident_id", Id, ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("text", Text, nullable=False, server_default=""),
    Index("ix_incident_events_incident", "incident_id"),
)

# Incident news accepted for a project's notification channels, kept until delivered (the
# same outbox as release webhooks': written with the incident, retried with back-off after).
incident_notifications = Table(
    "incident_notifications",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("webhook", String(128), nullable=False),  # the NotificationChannel's name
    Column("event", String(32), nullable=False),
    Column("body", JSON, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_incident_notifications_due", "delivered_at", "next_at"),
)
