"""FAQ entries in further languages: one version per entry and language.

Revision ID: 0017_faq_versions
Revises: 0016_suggestions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_faq_versions"
down_revision = "0016_suggestions"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "faq_versions",
        sa.Column("id", Id, primary_key=True),
        sa.Column(
            "entry_id",
            Id,
            sa.ForeignKey(
                "faq_entries.id", ondelete="CASCADE", name="fk_faq_versions_entry_id_faq_entries"
            ),
            nullable=False,
        ),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("alternatives", sa.JSON, nullable=False),
        sa.Column("embedding", sa.LargeBinary),
        sa.Column("embedding_model", sa.String(200), nullable=False, server_default=""),
        sa.Column("updated_at", Stamp, nullable=False),
        sa.UniqueConstraint("entry_id", "language", name="uq_faq_versions_entry_language"),
    )


def downgrade() -> None:
    op.drop_table("faq_versions")
