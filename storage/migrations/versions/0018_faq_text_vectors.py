"""Vectors of FAQ texts under the multilingual embedding model, by text digest.

Revision ID: 0018_faq_text_vectors
Revises: 0017_faq_versions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_faq_text_vectors"
down_revision = "0017_faq_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "faq_text_vectors",
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("model", "digest", name="pk_faq_text_vectors"),
    )


def downgrade() -> None:
    op.drop_table("faq_text_vectors")
