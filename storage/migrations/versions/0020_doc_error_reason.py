"""Why a document's last read failed, as a reason code and its values (JSON),
beside the English ``error``: the console says it in its reader's language.

Revision ID: 0020_doc_error_reason
Revises: 0019_docs_keywords
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020_doc_error_reason"
down_revision = "0019_docs_keywords"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("documents")}
    if "error_reason" not in columns:
        op.add_column(
            "documents", sa.Column("error_reason", sa.Text(), nullable=False, server_default="")
        )


def downgrade() -> None:
    op.drop_column("documents", "error_reason")
