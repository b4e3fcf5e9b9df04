"""Websites that embed the chat widget: key, tenant, allowed origins, the
user-signing secret and the widget's look.

Revision ID: 0013_widget_sites
Revises: 0012_web_visitors
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_widget_sites"
down_revision = "0012_web_visitors"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "widget_sites",
        sa.Column("key", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("origins", sa.JSON, nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("title", sa.String(80), nullable=False),
        sa.Column("color", sa.String(7), nullable=False),
        sa.Column("greeting", sa.Text, nullable=False),
        sa.Column("position", sa.String(8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_widget_sites"),
    )


def downgrade() -> None:
    op.drop_table("widget_sites")
