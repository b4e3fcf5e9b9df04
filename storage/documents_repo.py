"""Storage for documents: what was added (files, web pages, uploads), their
passages with vectors, and keyword search over the passages.

Keyword search runs in the database like the FAQ's: SQLite FTS5
(``document_chunks_fts``) or PostgreSQL full-text search over the generated
``search_vector`` column (migration 0015_documents). Every public method is
one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, text, update

from storage.db import as_utc, utcnow
from storage.keywords import index_text, ranked_match_query, search_terms
from storage.models import document_chunks, documents
from storage.sql import Store

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """One stored document (without an upload's bytes)."""

    id: int
    tenant: str
    internal: bool
    origin: str  # file | url | upload
    location: str
    name: str
    root: str
    title: str
    format: str
    content_hash: str
    mtime: float | None
    etag: str
    last_modified: str
    error: str
    chunks: int
    synced_at: datetime | None
    created_at: datetime
    # ``error`` as a reason code and its values, JSON ("" when none is known).
    error_reason: str = ""


@dataclass(frozen=True, slots=True)
class ChunkInput:
    """One passage to store, with its vectors (``embedding``)."""

    position: int
    section: str
    anchor: str
    page: int | None
    text: str
    text_hash: str
    embedding: bytes
    embedding_model: str


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """A stored passage with what a citation needs of its document."""

    id: int
    document_id: int
    tenant: str
    internal: bool
    position: int
    section: str
    anchor: str
    page: int | None
    text: str
    text_hash: str
    embedding: bytes | None
    embedding_model: str
    document_name: str
    document_title: str
    document_origin: str
    document_location: str


@dataclass(frozen=True, slots=True)
class DocumentFields:
    """What describes a document when it is (re)stored."""

    tenant: str
    internal: bool
    origin: str
    location: str
    name: str
    root: str = ""
    title: str = ""
    format: str = ""
    content_hash: str = ""
    mtime: float | None = None
    etag: str = ""
    last_modified: str = ""
    content: bytes | None = None
    error: str = ""
    error_reason: str = ""


_DOC_COLUMNS = [c for c in documents.c if c.name != "content"]


def extra_terms(text: str) -> str:
    """What the keyword index holds for ``text`` beside its own words: its CJK
    character pairs and the pieces of its long words (see storage.keywords)."""
    return index_text(text)[len(text) :].strip()


def _document(row: Any) -> DocumentRecord:
    return DocumentRecord(
        id=int(row.id),
        tenant=row.tenant,
        internal=bool(row.internal),
        origin=row.origin,
        location=row.location,
        name=row.name,
        root=row.root,
        title=row.title,
        format=row.format,
        content_hash=row.content_hash,
        mtime=row.mtime,
        etag=row.etag,
        last_modified=row.last_modified,
        error=row.error,
        error_reason=row.error_reason,
        chunks=int(row.chunks),
        synced_at=as_utc(row.synced_at),
        created_at=as_utc(row.created_at),
    )


def forget_documents(conn: Connection, tenant: str, *, sqlite: bool) -> int:
    """Remove ``tenant``'s documents and passages inside the caller's
    transaction (a Slack workspace's purge). Returns the documents removed."""
    ids = list(conn.execute(select(documents.c.id).where(documents.c.tenant == tenant)).scalars())
    for start in range(0, len(ids), _CHUNK):
        _delete_chunks(conn, ids[start : start + _CHUNK], sqlite=sqlite)
    conn.execute(delete(documents).where(documents.c.tenant == tenant))
    return len(ids)


def _delete_chunks(conn: Connection, document_ids: Sequence[int], *, sqlite: bool) -> None:
    if not document_ids:
        return
    where = document_chunks.c.document_id.in_(list(document_ids))
    if sqlite:
        chunk_ids = list(conn.execute(select(document_chunks.c.id).where(where)).scalars())
        for start in range(0, len(chunk_ids), _CHUNK):
            part = ",".join(str(int(i)) for i in chunk_ids[start : start + _CHUNK])
            conn.execute(text(f"DELETE FROM document_chunks_fts WHERE rowid IN ({part})"))
    conn.execute(delete(document_chunks).where(where))


class DocumentsRepository(Store):
    """Documents and their passages."""

    @property
    def _sqlite(self) -> bool:
        return self.dialect == "sqlite"

    async def documents(self, tenant: str | None = None) -> list[DocumentRecord]:
        """Every document (of ``tenant`` only, when given), oldest first."""
        query = select(*_DOC_COLUMNS).order_by(documents.c.id)
        if tenant is not None:
            query = query.where(documents.c.tenant == tenant)

        def op(conn: Connection) -> list[DocumentRecord]:
            return [_document(r) for r in conn.execute(query)]

        return await self._run("read the documents", op)

    async def content(self, document_id: int) -> bytes | None:
        """An uploaded document's stored bytes."""
        query = select(documents.c.content).where(documents.c.id == document_id)

        def op(conn: Connection) -> bytes | None:
            value = conn.execute(query).scalar()
            return bytes(value) if value is not None else None

        return await self._run("read a document", op)

    async def vectors(self, document_id: int) -> dict[str, tuple[bytes, str]]:
        """The stored vectors of a document's passages by text hash (for reuse)."""
        query = select(
            document_chunks.c.text_hash,
            document_chunks.c.embedding,
            document_chunks.c.embedding_model,
        ).where(document_chunks.c.document_id == document_id)

        def op(conn: Connection) -> dict[str, tuple[bytes, str]]:
            return {
                r.text_hash: (bytes(r.embedding), r.embedding_model)
                for r in conn.execute(query)
                if r.embedding is not None
            }

        return await self._run("read a document's passages", op)

    async def save(
        self, fields: DocumentFields, chunks: Sequence[ChunkInput] | None
    ) -> DocumentRecord:
        """Insert or update the document at (tenant, location); with ``chunks``
        its passages are replaced by them, in the same transaction. Without,
        the passages stay (a failed read loses nothing already indexed)."""
        now = utcnow()
        values: dict[str, Any] = {
            "internal": fields.internal,
            "origin": fields.origin,
            "name": fields.name,
            "root": fields.root,
            "error": fields.error,
            "error_reason": fields.error_reason,
            "synced_at": now,
        }
        if chunks is not None:
            values.update(
                title=fields.title,
                format=fields.format,
                content_hash=fields.content_hash,
                mtime=fields.mtime,
                etag=fields.etag,
                last_modified=fields.last_modified,
                chunks=len(chunks),
                changed_at=now,
            )
            if fields.content is not None:
                values["content"] = fields.content
        sqlite = self._sqlite

        def op(conn: Connection) -> DocumentRecord:
            found = conn.execute(
                select(documents.c.id).where(
                    documents.c.tenant == fields.tenant, documents.c.location == fields.location
                )
            ).scalar()
            if found is None:
                inserted = {"title": fields.title or fields.name, "changed_at": now, **values}
                found = conn.execute(
                    documents.insert()
                    .values(
                        tenant=fields.tenant,
                        location=fields.location,
                        created_at=now,
                        **inserted,
                    )
                    .returning(documents.c.id)
                ).scalar_one()
            else:
                conn.execute(update(documents).where(documents.c.id == found).values(**values))
            if chunks is not None:
                _delete_chunks(conn, [found], sqlite=sqlite)
                self._insert_chunks(conn, int(found), fields, chunks)
            row = conn.execute(select(*_DOC_COLUMNS).where(documents.c.id == found)).one()
            return _document(row)

        return await self._run("store a document", op)

    def _insert_chunks(
        self,
        conn: Connection,
        document_id: int,
        fields: DocumentFields,
        chunks: Sequence[ChunkInput],
    ) -> None:
        for chunk in chunks:
            chunk_id = conn.execute(
                document_chunks.insert()
                .values(
                    document_id=document_id,
                    tenant=fields.tenant,
                    internal=fields.internal,
                    position=chunk.position,
                    section=chunk.section,
                    anchor=chunk.anchor,
                    page=chunk.page,
                    text=chunk.text,
                    section_terms=extra_terms(chunk.section),
                    text_terms=extra_terms(chunk.text),
                    text_hash=chunk.text_hash,
                    embedding=chunk.embedding,
                    embedding_model=chunk.embedding_model,
                )
                .returning(document_chunks.c.id)
            ).scalar_one()
            if self._sqlite:
                conn.execute(
                    text(
                        "INSERT INTO document_chunks_fts(rowid, section, text) "
                        "VALUES (:id, :section, :text)"
                    ),
                    {
                        "id": chunk_id,
                        "section": index_text(chunk.section),
                        "text": index_text(chunk.text),
                    },
                )

    async def note(self, document_id: int, *, error: str, **changes: Any) -> None:
        """Record a sync that changed no passage: its time, its error, and
        what identifies the content read (mtime, ETag...)."""
        values = {"error": error, "error_reason": "", "synced_at": utcnow(), **changes}

        def op(conn: Connection) -> None:
            conn.execute(update(documents).where(documents.c.id == document_id).values(**values))

        await self._run("note a document's sync", op)

    async def remove(self, document_id: int) -> bool:
        sqlite = self._sqlite

        def op(conn: Connection) -> bool:
            _delete_chunks(conn, [document_id], sqlite=sqlite)
            return bool(
                conn.execute(delete(documents).where(documents.c.id == document_id)).rowcount
            )

        return await self._run("remove a document", op)

    async def chunks(self, *, with_embeddings: bool = True) -> list[ChunkRecord]:
        """Every passage with its document's name, title, origin and location."""
        columns = [c for c in document_chunks.c if with_embeddings or c.name != "embedding"]
        query = (
            select(
                *columns,
                documents.c.name.label("document_name"),
                documents.c.title.label("document_title"),
                documents.c.origin.label("document_origin"),
                documents.c.location.label("document_location"),
            )
            .join(documents, documents.c.id == document_chunks.c.document_id)
            .order_by(document_chunks.c.document_id, document_chunks.c.position)
        )

        def op(conn: Connection) -> list[ChunkRecord]:
            out = []
            for r in conn.execute(query):
                blob = getattr(r, "embedding", None)
                out.append(
                    ChunkRecord(
                        id=int(r.id),
                        document_id=int(r.document_id),
                        tenant=r.tenant,
                        internal=bool(r.internal),
                        position=int(r.position),
                        section=r.section,
                        anchor=r.anchor,
                        page=r.page,
                        text=r.text,
                        text_hash=r.text_hash,
                        embedding=bytes(blob) if blob is not None else None,
                        embedding_model=r.embedding_model,
                        document_name=r.document_name,
                        document_title=r.document_title,
                        document_origin=r.document_origin,
                        document_location=r.document_location,
                    )
                )
            return out

        return await self._run("read the document passages", op)

    async def set_embeddings(self, blobs: Mapping[int, bytes], *, embedding_model: str) -> None:
        def op(conn: Connection) -> None:
            for chunk_id, blob in blobs.items():
                conn.execute(
                    update(document_chunks)
                    .where(document_chunks.c.id == chunk_id)
                    .values(embedding=blob, embedding_model=embedding_model)
                )

        await self._run("store passage vectors", op)

    async def signature(self) -> tuple[int, int, datetime | None]:
        """Changes whenever a document's passages are added, replaced or removed."""
        query = select(
            func.count(),
            func.coalesce(func.max(documents.c.id), 0),
            func.max(documents.c.changed_at),
        )

        def op(conn: Connection) -> tuple[int, int, datetime | None]:
            row = conn.execute(query).one()
            return int(row[0]), int(row[1]), row[2]

        return await self._run("read the documents", op)

    async def keyword_search(
        self, question: str, *, tenant: str, limit: int = 50
    ) -> list[tuple[int, float]]:
        """Keyword matches among the passages ``tenant`` sees: (chunk id, score),
        best first; scores are positive and comparable within one call only.
        A heading match weighs more than a text match."""
        terms = search_terms(question)
        if not terms:
            return []
        sql, params = ranked_match_query(
            sqlite=self._sqlite,
            fts="document_chunks_fts",
            table="document_chunks",
            terms=terms,
            tenant=tenant,
            limit=limit,
        )

        def op(conn: Connection) -> list[tuple[int, float]]:
            return [(int(r[0]), float(r[1])) for r in conn.execute(sql, params)]

        return await self._run("search the documents", op)
