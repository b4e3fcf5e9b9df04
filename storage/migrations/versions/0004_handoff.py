"""Human handoff: tickets, what happened on them, and the outbox.

Revision ID: 0004_handoff
Revises: 0003_forget
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_handoff"
down_revision = "0003_forget"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tickets",
        sa.Column("id", Id, primary_key=True),
        sa.Column(
            "conversation_id",
            Id,
            sa.ForeignKey(
                "conversations.id",
                ondelete="CASCADE",
                name="fk_tickets_conversation_id_conversations",
            ),
            nullable=False,
        ),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("customer", sa.String(160), nullable=False, server_default=""),
        sa.Column("customer_name", sa.String(160), nullable=False, server_default=""),
        sa.Column("summary", sa.Text, nullable=False, server_default=""),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("agent", sa.String(160), nullable=False, server_default=""),
        sa.Column("agent_name", sa.String(160), nullable=False, server_default=""),
        sa.Column("space", sa.String(200), nullable=False),
        sa.Column("space_chat", sa.String(128), nullable=False),
        sa.Column("space_thread", sa.String(128), nullable=False, server_default=""),
        sa.Column("space_message", sa.String(128), nullable=False, server_default=""),
        sa.Column("close_reason", sa.String(32), nullable=False, server_default=""),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("claimed_at", Stamp),
        sa.Column("first_reply_at", Stamp),
        sa.Column("last_activity_at", Stamp, nullable=False),
        sa.Column("reminded_at", Stamp),
        sa.Column("closed_at", Stamp),
    )
    # One open ticket per conversation: the partial index makes opening a
    # second one fail in the database, whichever worker tries.
    op.create_index(
        "uq_tickets_open_conversation",
        "tickets",
        ["conversation_id"],
        unique=True,
        sqlite_where=sa.text("state <> 'closed'"),
        postgresql_where=sa.text("state <> 'closed'"),
    )
    op.create_index("ix_tickets_space", "tickets", ["space_chat", "space_thread"])
    op.create_index("ix_tickets_state", "tickets", ["state", "last_activity_at"])
    op.create_table(
        "ticket_events",
        sa.Column("id", Id, primary_key=True),
        sa.Column(
            "ticket_id",
            Id,
            sa.ForeignKey(
                "tickets.id", ondelete="CASCADE", name="fk_ticket_events_ticket_id_tickets"
            ),
            nullable=False,
        ),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("author", sa.String(160), nullable=False, server_default=""),
        sa.Column("text", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", Stamp, nullable=False),
    )
    op.create_index("ix_ticket_events_ticket", "ticket_events", ["ticket_id", "id"])
    op.create_table(
        "outbox",
        sa.Column("id", Id, primary_key=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column(
            "ticket_id",
            Id,
            sa.ForeignKey("tickets.id", ondelete="CASCADE", name="fk_outbox_ticket_id_tickets"),
        ),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("chat", sa.String(128), nullable=False),
        sa.Column("thread", sa.String(128), nullable=False, server_default=""),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text),
        sa.Column("next_attempt_at", Stamp, nullable=False),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("claimed_until", Stamp),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("sent_at", Stamp),
        sa.Column("sent_message", sa.String(128), nullable=False, server_default=""),
        sa.UniqueConstraint("key", name="uq_outbox_key"),
    )
    op.create_index("ix_outbox_due", "outbox", ["status", "next_attempt_at"])
    op.create_index("ix_outbox_sent_message", "outbox", ["chat", "sent_message"])


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("ticket_events")
    op.drop_table("tickets")
