"""Phrasings customers chose for an FAQ entry ("did you mean ...?"), per tenant.

Revision ID: 0009_phrasings
Revises: 0008_claims
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_phrasings"
down_revision = "0008_claims"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "faq_phrasings",
        sa.Column("id", Id, primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False, server_default=""),
        sa.Column(
            "entry_id",
            Id,
            sa.ForeignKey(
                "faq_entries.id", ondelete="CASCADE", name="fk_faq_phrasings_entry_id_faq_entries"
            ),
            nullable=False,
        ),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("user_id", sa.String(160), nullable=False, server_default=""),
        sa.Column("embedding", sa.LargeBinary),
        sa.Column("embedding_model", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", Stamp, nullable=False),
        sa.UniqueConstraint("tenant", "entry_id", "text", name="uq_faq_phrasings_tenant_entry"),
    )
    op.create_index("ix_faq_phrasings_user_id", "faq_phrasings", ["user_id"])


def downgrade() -> None:
    op.drop_table("faq_phrasings")
