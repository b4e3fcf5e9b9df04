"""Inbound claims that several workers share: retry times, per-conversation
look-ups for answering in order, and leases for single-consumer feeds.

Revision ID: 0008_claims
Revises: 0007_slack_installs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_claims"
down_revision = "0007_slack_installs"
branch_labels = None
depends_on = None

Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    # When a failed event may be tried again; NULL on a failed event means it
    # is settled for good. Events that failed before this revision stay
    # settled: their customers were told long ago, and a late answer would be
    # a stale second one.
    op.add_column("inbound_events", sa.Column("retry_at", Stamp))
    # Every claim looks at the older open events of its conversation.
    op.create_index(
        "ix_inbound_events_conversation", "inbound_events", ["conversation_id", "status", "id"]
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", Stamp, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("ix_inbound_events_conversation", table_name="inbound_events")
    op.drop_column("inbound_events", "retry_at")
