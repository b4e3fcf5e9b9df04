"""The documents' keyword index as the FAQ's: CJK character pairs and pieces of
long compound words indexed beside the passages' own words.

The extra words are kept in two columns (the heading's and the text's):
PostgreSQL's generated ``search_vector`` includes them, the heading's with the
heading's weight; SQLite's standalone FTS5 table is filled again with them.

Revision ID: 0019_docs_keywords
Revises: 0018_faq_text_vectors
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.keywords import index_text

revision = "0019_docs_keywords"
down_revision = "0018_faq_text_vectors"
branch_labels = None
depends_on = None

OLD_TSVECTOR = (
    "(setweight(to_tsvector('english', section), 'A') || "
    "setweight(to_tsvector('english', text), 'B'))"
)
PG_TSVECTOR = (
    "(setweight(to_tsvector('english', section || ' ' || section_terms), 'A') || "
    "setweight(to_tsvector('english', text || ' ' || text_terms), 'B'))"
)


def extra_terms(text: str) -> str:
    """The words ``index_text`` adds to ``text`` (character pairs, compound pieces)."""
    return index_text(text)[len(text) :].strip()


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, section, text FROM document_chunks")).all()
    for name in ("section_terms", "text_terms"):
        op.add_column(
            "document_chunks", sa.Column(name, sa.Text, nullable=False, server_default="")
        )
    sqlite = bind.dialect.name == "sqlite"
    if sqlite:
        op.execute("DELETE FROM document_chunks_fts")
    for row in rows:
        if sqlite:
            bind.execute(
                sa.text(
                    "INSERT INTO document_chunks_fts(rowid, section, text) "
                    "VALUES (:id, :section, :text)"
                ),
                {"id": row.id, "section": index_text(row.section), "text": index_text(row.text)},
            )
        bind.execute(
            sa.text(
                "UPDATE document_chunks SET section_terms = :s, text_terms = :t WHERE id = :id"
            ),
            {"id": row.id, "s": extra_terms(row.section), "t": extra_terms(row.text)},
        )
    if not sqlite:
        _search_vector(PG_TSVECTOR)


def _search_vector(expression: str) -> None:
    op.execute("DROP INDEX IF EXISTS ix_document_chunks_fts")
    op.execute("ALTER TABLE document_chunks DROP COLUMN search_vector")
    op.execute(
        "ALTER TABLE document_chunks ADD COLUMN search_vector tsvector "
        f"GENERATED ALWAYS AS ({expression}) STORED"
    )
    op.execute("CREATE INDEX ix_document_chunks_fts ON document_chunks USING gin (search_vector)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DELETE FROM document_chunks_fts")
        op.execute(
            "INSERT INTO document_chunks_fts(rowid, section, text) "
            "SELECT id, section, text FROM document_chunks"
        )
    else:
        _search_vector(OLD_TSVECTOR)
    with op.batch_alter_table("document_chunks") as batch:
        batch.drop_column("text_terms")
        batch.drop_column("section_terms")
