"""The NodePort register: ports given out per cluster, each held by one application's Service.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_ports",
        sa.Column("cluster", sa.String(64), primary_key=True),
        sa.Column("port", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(128), nullable=False),
        sa.Column("application", sa.String(128), nullable=False),
        sa.Column("service", sa.String(128), nullable=False),
        sa.Column("service_port", sa.Integer, nullable=False),
    )
    op.create_index("ix_node_ports_holder", "node_ports", ["tenant", "application"])
    op.create_index("ix_node_ports_namespace", "node_ports", ["cluster", "namespace"])


def downgrade() -> None:
    op.drop_index("ix_node_ports_namespace", "node_ports")
    op.drop_index("ix_node_ports_holder", "node_ports")
    op.drop_table("node_ports")
