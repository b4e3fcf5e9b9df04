"""FAQ entries in further languages (``faq_versions``): the statements
``KnowledgeRepository`` runs for them, each inside the caller's transaction.

A version belongs to one entry (same id, another language); storing one marks
its entry changed, so every process rebuilds its index and searches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, select, update

from storage.db import utcnow
from storage.models import faq_entries, faq_versions


@dataclass(frozen=True, slots=True)
class FaqVersion:
    """One entry's question and answer in ``language``."""

    id: int
    entry_id: int
    language: str
    question: str
    answer: str
    alternatives: tuple[str, ...]
    embedding: bytes | None = field(default=None, repr=False)
    embedding_model: str = ""


@dataclass(frozen=True, slots=True)
class VersionsStored:
    stored: int  # created or changed
    unchanged: int
    unknown: tuple[str, ...]  # keys of the file with no entry to attach to


def store_versions(
    conn: Connection,
    tenant: str,
    language: str,
    items: Sequence[tuple[str, str, str, Sequence[str], bytes | None]],
    embedding_model: str,
) -> VersionsStored:
    """(entry key, question, answer, alternatives, vectors) per version."""
    stored = unchanged = 0
    unknown: list[str] = []
    now = utcnow()
    for key, question, answer, alternatives, vectors in items:
        entry_id = conn.execute(
            select(faq_entries.c.id).where(faq_entries.c.tenant == tenant, faq_entries.c.key == key)
        ).scalar()
        if entry_id is None:
            unknown.append(key)
            continue
        row = conn.execute(
            select(faq_versions).where(
                faq_versions.c.entry_id == entry_id, faq_versions.c.language == language
            )
        ).first()
        values = {
            "question": question,
            "answer": answer,
            "alternatives": list(alternatives),
            "embedding": vectors,
            "embedding_model": embedding_model if vectors is not None else "",
            "updated_at": now,
        }
        if row is not None and (row.question, row.answer, list(row.alternatives)) == (
            question,
            answer,
            list(alternatives),
        ):
            unchanged += 1
            continue
        if row is None:
            conn.execute(
                faq_versions.insert().values(entry_id=entry_id, language=language, **values)
            )
        else:
            conn.execute(update(faq_versions).where(faq_versions.c.id == row.id).values(**values))
        conn.execute(update(faq_entries).where(faq_entries.c.id == entry_id).values(changed_at=now))
        stored += 1
    return VersionsStored(stored, unchanged, tuple(unknown))


def load_versions(conn: Connection, *, with_embeddings: bool) -> list[FaqVersion]:
    columns = [c for c in faq_versions.c if with_embeddings or c.name != "embedding"]
    rows = conn.execute(select(*columns).order_by(faq_versions.c.id))
    return [
        FaqVersion(
            id=int(r.id),
            entry_id=int(r.entry_id),
            language=r.language,
            question=r.question,
            answer=r.answer,
            alternatives=tuple(r.alternatives or ()),
            embedding=r._mapping.get("embedding"),
            embedding_model=r.embedding_model,
        )
        for r in rows
    ]


def put_version_embeddings(conn: Connection, vectors: dict[int, bytes], model: str) -> None:
    for version_id, blob in vectors.items():
        conn.execute(
            update(faq_versions)
            .where(faq_versions.c.id == version_id)
            .values(embedding=blob, embedding_model=model)
        )
