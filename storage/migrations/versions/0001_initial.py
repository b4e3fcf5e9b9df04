"""Conversations, messages, inbound events and users.

Revision ID: 0001_initial
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", Id, primary_key=True),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("chat", sa.String(128), nullable=False),
        sa.Column("thread", sa.String(128), nullable=False, server_default=""),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", Stamp, nullable=False),
        sa.UniqueConstraint("platform", "tenant", "chat", "thread", name="uq_conversations_ref"),
    )
    op.create_table(
        "messages",
        sa.Column("id", Id, primary_key=True),
        sa.Column(
            "conversation_id",
            Id,
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False, server_default="chat"),
        sa.Column("user_id", sa.String(160)),
        sa.Column("reply_to", Id),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("latency_ms", sa.Integer),
        sa.Column("created_at", Stamp, nullable=False),
    )
    op.create_index(
        "ix_messages_position",
        "messages",
        ["conversation_id", sa.text("coalesce(reply_to, id)"), "id"],
    )
    op.create_index("ix_messages_user", "messages", ["user_id"])
    op.create_table(
        "inbound_events",
        sa.Column("id", Id, primary_key=True),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(160), nullable=False),
        sa.Column(
            "conversation_id",
            Id,
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("message_id", Id),
        sa.Column("user_id", sa.String(160), nullable=False),
        sa.Column("user_name", sa.String(160), nullable=False, server_default=""),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text),
        sa.Column("received_at", Stamp, nullable=False),
        sa.Column("claimed_at", Stamp),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("answered_at", Stamp),
        sa.UniqueConstraint("platform", "event_id", name="uq_inbound_events_platform_event"),
    )
    op.create_index("ix_inbound_events_status", "inbound_events", ["platform", "status"])
    op.create_table(
        "users",
        sa.Column("id", Id, primary_key=True),
        sa.Column("platform_user", sa.String(160), nullable=False),
        sa.Column("name", sa.String(160), nullable=False, server_default=""),
        sa.Column("role", sa.String(16), nullable=False, server_default="user"),
        sa.Column("created_at", Stamp, nullable=False),
        sa.UniqueConstraint("platform_user", name="uq_users_platform_user"),
    )


def downgrade() -> None:
    op.drop_table("users")
    op.drop_index("ix_inbound_events_status", table_name="inbound_events")
    op.drop_table("inbound_events")
    op.drop_index("ix_messages_user", table_name="messages")
    op.drop_index("ix_messages_position", table_name="messages")
    op.drop_table("messages")
    op.drop_table("conversations")
