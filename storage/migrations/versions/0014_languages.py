"""The customer's language: the one last detected in each conversation, and a
tenant's default set by its admins (``/language``).

Revision ID: 0014_languages
Revises: 0013_widget_sites
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_languages"
down_revision = "0013_widget_sites"
branch_labels = None
depends_on = None

Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("conversations", sa.Column("language", sa.String(8), nullable=True))
    op.create_table(
        "tenant_languages",
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("set_by", sa.String(200), nullable=False),
        sa.Column("updated_at", Stamp, nullable=False),
        sa.PrimaryKeyConstraint("platform", "tenant", name="pk_tenant_languages"),
    )


def downgrade() -> None:
    op.drop_table("tenant_languages")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("language")
