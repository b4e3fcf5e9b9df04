"""The support team: roles per tenant, the audit trail, quotas and model usage,
ratings, learned answers awaiting approval, and buttons on outbox notices.

Revision ID: 0006_team
Revises: 0005_console
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_team"
down_revision = "0005_console"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "team_roles",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("platform_user", sa.String(160), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("granted_by", sa.String(160), nullable=False, server_default=""),
        sa.Column("updated_at", Stamp, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", Id, primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False, server_default=""),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(300), nullable=False, server_default=""),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
    )
    op.create_index("ix_audit_log_tenant", "audit_log", ["tenant", "id"])
    op.create_table(
        "quotas",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("subject", sa.String(160), primary_key=True),
        sa.Column("daily_tokens", sa.BigInteger, nullable=False),
        sa.Column("set_by", sa.String(160), nullable=False, server_default=""),
        sa.Column("updated_at", Stamp, nullable=False),
    )
    op.create_table(
        "model_usage",
        sa.Column("id", Id, primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(160), nullable=False, server_default=""),
        sa.Column("inbound_id", Id),
        sa.Column("plan", sa.String(16), nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("model_seconds", sa.Float, nullable=False, server_default="0"),
        sa.Column("seconds_source", sa.String(8), nullable=False, server_default="wall"),
        sa.Column("created_at", Stamp, nullable=False),
    )
    op.create_index("ix_model_usage_tenant", "model_usage", ["tenant", "created_at"])
    op.create_index("ix_model_usage_user", "model_usage", ["user_id", "created_at"])
    op.create_table(
        "quota_notices",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("user_id", sa.String(160), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("created_at", Stamp, nullable=False),
    )
    op.create_table(
        "ratings",
        sa.Column("id", Id, primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("conversation_id", Id, nullable=False),
        sa.Column("inbound_id", Id),
        sa.Column("ticket_id", Id),
        sa.Column("user_id", sa.String(160), nullable=False, server_default=""),
        sa.Column("question", sa.Text, nullable=False, server_default=""),
        sa.Column("score", sa.Integer),
        sa.Column("comment", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("rated_at", Stamp),
    )
    op.create_index("ix_ratings_conversation", "ratings", ["conversation_id", "id"])
    op.create_index("ix_ratings_tenant", "ratings", ["tenant", "rated_at"])
    op.create_index("ix_ratings_user_id", "ratings", ["user_id"])
    op.create_table(
        "faq_proposals",
        sa.Column("id", Id, primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("target_ref", sa.String(200), nullable=False, server_default=""),
        sa.Column("target_tenant", sa.String(128), nullable=False, server_default=""),
        sa.Column("ticket_id", Id),
        sa.Column("proposed_by", sa.String(160), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(160), nullable=False, server_default=""),
        sa.Column("entry_ref", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("decided_at", Stamp),
    )
    op.create_index("ix_faq_proposals_status", "faq_proposals", ["status", "tenant"])
    op.add_column("outbox", sa.Column("buttons", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("buttons")
    for table in (
        "faq_proposals",
        "ratings",
        "quota_notices",
        "model_usage",
        "quotas",
        "audit_log",
        "team_roles",
    ):
        op.drop_table(table)
