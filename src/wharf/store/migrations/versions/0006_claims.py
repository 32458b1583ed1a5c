"""Claims: platform-wide unique names (namespaces, rendered objects) held by one resource.

Existing projects' namespaces are claimed here, so that a project written after the upgrade
cannot be given a namespace an existing project already has.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    claims = op.create_table(
        "claims",
        sa.Column("register", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("holder_kind", sa.String(64), nullable=False),
        sa.Column("holder_tenant", sa.String(64), nullable=False),
        sa.Column("holder_name", sa.String(128), nullable=False),
    )
    op.create_index("ix_claims_holder", "claims", ["holder_kind", "holder_tenant", "holder_name"])
    rows = op.get_bind().execute(
        sa.text("SELECT tenant, name, spec FROM resources WHERE kind = 'Project' ORDER BY id")
    )
    taken: set[str] = set()
    values = []
    for tenant, name, spec in rows:
        spec = json.loads(spec) if isinstance(spec, str) else spec
        for env in spec.get("environments", []):
            namespace = f"{tenant}--{name}-{env['name']}"
            if namespace in taken:
                continue  # the older project keeps it; the newer one reports a conflict
            taken.add(namespace)
            values.append(
                {
                    "register": "namespace",
                    "key": namespace,
                    "holder_kind": "Project",
                    "holder_tenant": tenant,
                    "holder_name": name,
                }
            )
    if values:
        op.bulk_insert(claims, values)


def downgrade() -> None:
    op.drop_index("ix_claims_holder", "claims")
    op.drop_table("claims")
