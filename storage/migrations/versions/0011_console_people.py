"""Operator console per person: the person a sign-in link and a session belong
to, and personal sign-in tokens (hashed).

Revision ID: 0011_console_people
Revises: 0010_tenant_desks
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_console_people"
down_revision = "0010_tenant_desks"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    # "" is the owner's fallback: the shared token, or a link printed without --user.
    with op.batch_alter_table("console_links") as batch:
        batch.add_column(
            sa.Column("platform_user", sa.String(160), nullable=False, server_default="")
        )
    with op.batch_alter_table("console_sessions") as batch:
        batch.add_column(
            sa.Column("platform_user", sa.String(160), nullable=False, server_default="")
        )
    op.create_table(
        "console_tokens",
        sa.Column("id", Id, primary_key=True),
        sa.Column("platform_user", sa.String(160), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.UniqueConstraint("token_hash", name="uq_console_tokens_token_hash"),
        sa.UniqueConstraint("platform_user", name="uq_console_tokens_platform_user"),
    )


def downgrade() -> None:
    op.drop_table("console_tokens")
    with op.batch_alter_table("console_sessions") as batch:
        batch.drop_column("platform_user")
    with op.batch_alter_table("console_links") as batch:
        batch.drop_column("platform_user")
