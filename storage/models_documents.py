"""The tables of documents and their passages (``storage.documents_repo``)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from storage.schema import IdType, metadata

# -- documents -------------------------------------------------------------------------
# Files, web pages and console uploads the bot answers from, per tenant ("" for
# every tenant's) like FAQ entries, and their passages. Keyword search over the
# passages runs on a SQLite FTS5 table ``document_chunks_fts`` (rowid =
# document_chunks.id) or, on PostgreSQL, on a generated ``search_vector``
# column with a GIN index; both are made by migration 0015_documents.
documents = Table(
    "documents",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("tenant", String(128), nullable=False, server_default=""),
    # For agents only: never quoted to customers.
    Column("internal", Boolean, nullable=False, server_default=text("false")),
    # file | url | upload
    Column("origin", String(16), nullable=False),
    # An absolute path, a URL, or "upload:<name>": unique per tenant.
    Column("location", String(2000), nullable=False),
    # What citations call it: the path below the folder it was added with, a
    # URL, an uploaded file's name.
    Column("name", String(1000), nullable=False),
    # The folder or start URL it was found under ("" when added by itself);
    # ``sync`` looks there for new files and pages.
    Column("root", String(2000), nullable=False, server_default=""),
    Column("title", Text, nullable=False, server_default=""),
    Column("format", String(16), nullable=False, server_default=""),
    Column("content_hash", String(64), nullable=False, server_default=""),
    Column("mtime", Float),
    Column("etag", String(300), nullable=False, server_default=""),
    Column("last_modified", String(100), nullable=False, server_default=""),
    # An uploaded document's bytes (files and pages are read from where they are).
    Column("content", LargeBinary),
    # Why the last read failed or what it had to work around ("" when fine).
    Column("error", Text, nullable=False, server_default=""),
    # The same as a reason code and its values, JSON ("" when none is known).
    Column("error_reason", Text, nullable=False, server_default=""),
    Column("chunks", Integer, nullable=False, server_default="0"),
    Column("synced_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant", "location", name="uq_documents_tenant"),
)

document_chunks = Table(
    "document_chunks",
    metadata,
    Column("id", IdType, primary_key=True),
    Column(
        "document_id",
        IdType,
        ForeignKey("documents.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("tenant", String(128), nullable=False, server_default=""),
    Column("internal", Boolean, nullable=False, server_default=text("false")),
    Column("position", Integer, nullable=False),
    # The heading path, "Billing › Refunds".
    Column("section", Text, nullable=False, server_default=""),
    Column("anchor", String(300), nullable=False, server_default=""),
    Column("page", Integer),
    Column("text", Text, nullable=False),
    # What the keyword index holds beside the heading path and the text: their
    # CJK character pairs and pieces of long words (storage.keywords.index_text).
    Column("section_terms", Text, nullable=False, server_default=""),
    Column("text_terms", Text, nullable=False, server_default=""),
    # Of what was embedded: a chunk whose hash is unchanged keeps its vectors.
    Column("text_hash", String(64), nullable=False),
    # float32 little-endian: the heading path's vector, then heading path + text.
    Column("embedding", LargeBinary),
    Column("embedding_model", String(200), nullable=False, server_default=""),
    Index("ix_document_chunks_document", "document_id", "position"),
)
