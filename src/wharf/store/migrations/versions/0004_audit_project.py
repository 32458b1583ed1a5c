"""Audit events name their project, so that project members can read their project's trail.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("project", sa.String(64), nullable=False, server_default=""))
        batch.create_index("ix_audit_events_tenant_project", ["tenant", "project"])


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_index("ix_audit_events_tenant_project")
        batch.drop_column("project")
