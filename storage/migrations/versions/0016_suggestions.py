"""Replies suggested to agents in a ticket, and what the agents did with them.

Revision ID: 0016_suggestions
Revises: 0015_documents
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_suggestions"
down_revision = "0015_documents"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "suggestions",
        sa.Column("id", Id, primary_key=True),
        sa.Column("ticket_id", Id, nullable=False),
        sa.Column("conversation_id", Id, nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("cause", sa.String(200), nullable=False),
        sa.Column("inbound_id", Id),
        sa.Column("question", sa.Text, nullable=False, server_default=""),
        sa.Column("text", sa.Text, nullable=False, server_default=""),
        sa.Column("path", sa.String(16), nullable=False),
        sa.Column("language", sa.String(16), nullable=False, server_default=""),
        sa.Column("topic", sa.String(300), nullable=False, server_default=""),
        sa.Column("sources", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("agent", sa.String(160), nullable=False, server_default=""),
        sa.Column("agent_name", sa.String(160), nullable=False, server_default=""),
        sa.Column("sent_text", sa.Text, nullable=False, server_default=""),
        sa.Column("changed", sa.Float),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("decided_at", Stamp),
        sa.PrimaryKeyConstraint("id", name="pk_suggestions"),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name="fk_suggestions_ticket_id_tickets",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_suggestions_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("cause", name="uq_suggestions_cause"),
    )
    op.create_index("ix_suggestions_ticket", "suggestions", ["ticket_id", "state"])
    op.create_index("ix_suggestions_tenant", "suggestions", ["tenant", "created_at"])


def downgrade() -> None:
    op.drop_table("suggestions")
