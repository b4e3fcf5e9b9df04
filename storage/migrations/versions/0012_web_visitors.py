"""The web chat's messages waiting for a visitor, kept for every worker, and
the server's own generated keys (the visitor signatures' one).

Revision ID: 0012_web_visitors
Revises: 0011_console_people
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_web_visitors"
down_revision = "0011_console_people"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "web_messages",
        sa.Column("id", Id, primary_key=True),
        sa.Column("visitor", sa.String(64), nullable=False),
        sa.Column("chat", sa.String(128), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("buttons", sa.JSON, nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_web_messages"),
    )
    op.create_index("ix_web_messages_visitor", "web_messages", ["visitor", "id"])
    op.create_index("ix_web_messages_created", "web_messages", ["created_at"])
    op.create_table(
        "server_keys",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_server_keys"),
    )


def downgrade() -> None:
    op.drop_table("server_keys")
    op.drop_table("web_messages")
