"""Support spaces that tenants' admins chose for their own customers (/desk).

Revision ID: 0010_tenant_desks
Revises: 0009_phrasings
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_tenant_desks"
down_revision = "0009_phrasings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_desks",
        sa.Column("platform", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("chat", sa.String(128), nullable=False, server_default=""),
        sa.Column("set_by", sa.String(160), nullable=False, server_default=""),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tenant_desks")
