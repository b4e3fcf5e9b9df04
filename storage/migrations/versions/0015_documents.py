"""Documents as a knowledge source: the documents, their passages with their
vectors, and a keyword index over the passages.

Revision ID: 0015_documents
Revises: 0014_languages
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_documents"
down_revision = "0014_languages"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)
PG_TSVECTOR = (
    "(setweight(to_tsvector('english', section), 'A') || "
    "setweight(to_tsvector('english', text), 'B'))"
)


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", Id, primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False, server_default=""),
        sa.Column("internal", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("location", sa.String(2000), nullable=False),
        sa.Column("name", sa.String(1000), nullable=False),
        sa.Column("root", sa.String(2000), nullable=False, server_default=""),
        sa.Column("title", sa.Text, nullable=False, server_default=""),
        sa.Column("format", sa.String(16), nullable=False, server_default=""),
        sa.Column("content_hash", sa.String(64), nullable=False, server_default=""),
        sa.Column("mtime", sa.Float),
        sa.Column("etag", sa.String(300), nullable=False, server_default=""),
        sa.Column("last_modified", sa.String(100), nullable=False, server_default=""),
        sa.Column("content", sa.LargeBinary),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("chunks", sa.Integer, nullable=False, server_default="0"),
        sa.Column("synced_at", Stamp),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("changed_at", Stamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_documents"),
        sa.UniqueConstraint("tenant", "location", name="uq_documents_tenant"),
    )
    op.create_table(
        "document_chunks",
        sa.Column("id", Id, primary_key=True),
        sa.Column("document_id", Id, nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False, server_default=""),
        sa.Column("internal", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("section", sa.Text, nullable=False, server_default=""),
        sa.Column("anchor", sa.String(300), nullable=False, server_default=""),
        sa.Column("page", sa.Integer),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("text_hash", sa.String(64), nullable=False),
        sa.Column("embedding", sa.LargeBinary),
        sa.Column("embedding_model", sa.String(200), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_document_chunks"),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name="fk_document_chunks_document_id_documents",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_document_chunks_document", "document_chunks", ["document_id", "position"])
    if op.get_bind().dialect.name == "sqlite":
        # Standalone (rowid = document_chunks.id), kept in step by the
        # repository in the same transaction as the passage.
        op.execute(
            "CREATE VIRTUAL TABLE document_chunks_fts USING fts5("
            "section, text, tokenize='porter unicode61 remove_diacritics 2')"
        )
    else:
        op.execute(
            "ALTER TABLE document_chunks ADD COLUMN search_vector tsvector "
            f"GENERATED ALWAYS AS ({PG_TSVECTOR}) STORED"
        )
        op.execute(
            "CREATE INDEX ix_document_chunks_fts ON document_chunks USING gin (search_vector)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS document_chunks_fts")
    op.drop_index("ix_document_chunks_document", table_name="document_chunks")
    op.drop_table("document_chunks")
    op.drop_table("documents")
