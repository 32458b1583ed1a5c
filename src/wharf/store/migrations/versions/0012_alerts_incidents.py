"""Incidents from alerts: incidents, their timeline, and the outbox of their notifications.

Revision ID: 0012_alerts_incidents
Revises: 0011
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_alerts_incidents"
down_revision = "0011"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("application", sa.String(128), nullable=False, server_default=""),
        sa.Column("cluster", sa.String(64), nullable=False, server_default=""),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False, server_default="warning"),
        sa.Column("summary", sa.Text, nullable=False, server_default=""),
        sa.Column("assignee", sa.String(64), nullable=False, server_default=""),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_incidents_group", "incidents", ["tenant", "rule", "application", "cluster", "state"]
    )
    op.create_index("ix_incidents_tenant", "incidents", ["tenant", "project", "state"])
    op.create_table(
        "incident_events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column(
            "incident_id", Id, sa.ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("text", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_incident_events_incident", "incident_events", ["incident_id"])
    op.create_table(
        "incident_notifications",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("webhook", sa.String(128), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_incident_notifications_due", "incident_notifications", ["delivered_at", "next_at"]
    )


def downgrade() -> None:
    op.drop_table("incident_notifications")
    op.drop_table("incident_events")
    op.drop_table("incidents")
