"""Knowledge base: FAQ entries with keyword search, answer log, escalations, settings.

Revision ID: 0002_knowledge
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_knowledge"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)

# PostgreSQL keeps the weighted tsvector in a stored generated column: ranking
# (ts_rank_cd) reads it instead of re-parsing every matching row's text.
PG_TSVECTOR = (
    "(setweight(to_tsvector('english', search_text), 'A') || "
    "setweight(to_tsvector('english', answer), 'B'))"
)


def upgrade() -> None:
    op.create_table(
        "faq_entries",
        sa.Column("id", Id, primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False, server_default=""),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("external_id", sa.String(200)),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("alternatives", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("source", sa.Text, nullable=False, server_default=""),
        sa.Column("search_text", sa.Text, nullable=False),
        sa.Column("embedding", sa.LargeBinary),
        sa.Column("embedding_model", sa.String(200), nullable=False, server_default=""),
        sa.Column("updated_at", Stamp, nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("changed_at", Stamp, nullable=False),
        sa.UniqueConstraint("tenant", "key", name="uq_faq_entries_tenant_key"),
    )
    op.create_table(
        "faq_answers",
        sa.Column("id", Id, primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False, server_default=""),
        sa.Column("conversation_key", sa.String(600), nullable=False, server_default=""),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("path", sa.String(16), nullable=False),
        sa.Column("entries", sa.JSON, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
    )
    op.create_index("ix_faq_answers_created", "faq_answers", ["created_at"])
    op.create_table(
        "escalations",
        sa.Column("id", Id, primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False, server_default=""),
        sa.Column("conversation_key", sa.String(600), nullable=False, server_default=""),
        sa.Column("user_id", sa.String(160), nullable=False, server_default=""),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column(
            "answer_id",
            Id,
            sa.ForeignKey(
                "faq_answers.id",
                ondelete="SET NULL",
                name="fk_escalations_answer_id_faq_answers",
            ),
        ),
        sa.Column("status", sa.String(16), nullable=False, server_default="open"),
        sa.Column("created_at", Stamp, nullable=False),
    )
    op.create_index("ix_escalations_status", "escalations", ["status", "created_at"])
    op.create_table(
        "knowledge_settings",
        sa.Column("scope", sa.String(700), primary_key=True),
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", Stamp, nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        # Standalone FTS5 table (rowid = faq_entries.id) kept in step by the
        # repository inside the same transaction as the entry.
        op.execute(
            "CREATE VIRTUAL TABLE faq_fts USING fts5("
            "question, answer, tokenize='porter unicode61 remove_diacritics 2')"
        )
    else:
        op.execute(
            "ALTER TABLE faq_entries ADD COLUMN search_vector tsvector "
            f"GENERATED ALWAYS AS ({PG_TSVECTOR}) STORED"
        )
        op.execute("CREATE INDEX ix_faq_entries_fts ON faq_entries USING gin (search_vector)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS faq_fts")
    op.drop_table("knowledge_settings")
    op.drop_index("ix_escalations_status", table_name="escalations")
    op.drop_table("escalations")
    op.drop_index("ix_faq_answers_created", table_name="faq_answers")
    op.drop_table("faq_answers")
    op.drop_table("faq_entries")
