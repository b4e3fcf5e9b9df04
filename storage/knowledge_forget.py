"""Learned questions taken back out of the knowledge base, when the person
who asked them is forgotten or their workspace purged; and the second model's
vectors of texts no entry has any more (``faq_text_vectors``), so that nothing of
them waits for the next index rebuild to go.

``/learn`` copies a customer's question into a proposal; approving it makes
the question a new entry or one more alternative phrasing of an entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, and_, delete, or_, select, text, update

from storage.db import utcnow
from storage.faq_vectors import faq_text_vectors, text_key, vector_texts
from storage.keywords import index_text
from storage.models import faq_entries, faq_versions


@dataclass(frozen=True, slots=True)
class LearnedWording:
    """A question that an approved learned answer put into the knowledge base:
    the question of a new entry (``new_entry``), else one more alternative
    phrasing of entry ``ref`` of ``tenant``."""

    tenant: str
    ref: str
    question: str
    new_entry: bool


def forget_wordings(conn: Connection, wordings: Iterable[LearnedWording], *, sqlite: bool) -> int:
    """Take learned questions back out of the entries they went into: an
    alternative is removed (the entry's vectors are computed again), an entry
    whose question it is goes. Returns the entries changed or removed. Runs
    inside the caller's transaction."""
    changed = 0
    for wording in wordings:
        # A ref is the entry's external id, else its row id.
        ref = faq_entries.c.external_id == wording.ref
        if wording.ref.isdigit():
            ref = or_(
                ref, and_(faq_entries.c.external_id.is_(None), faq_entries.c.id == int(wording.ref))
            )
        row = conn.execute(
            select(
                faq_entries.c.id,
                faq_entries.c.question,
                faq_entries.c.answer,
                faq_entries.c.alternatives,
            ).where(faq_entries.c.tenant == wording.tenant, ref)
        ).first()
        if row is None:
            continue
        if wording.new_entry and row.question == wording.question:
            if sqlite:
                conn.execute(text("DELETE FROM faq_fts WHERE rowid = :id"), {"id": row.id})
            conn.execute(delete(faq_entries).where(faq_entries.c.id == row.id))
            changed += 1
            continue
        kept = [a for a in row.alternatives if a != wording.question]
        if kept == list(row.alternatives):
            continue
        search = "\n".join([row.question, *kept])
        if sqlite:
            conn.execute(text("DELETE FROM faq_fts WHERE rowid = :id"), {"id": row.id})
            conn.execute(
                text("INSERT INTO faq_fts(rowid, question, answer) VALUES (:id, :q, :a)"),
                {"id": row.id, "q": index_text(search), "a": index_text(row.answer)},
            )
        # No vector may keep the removed wording: the index computes them anew.
        conn.execute(
            update(faq_entries)
            .where(faq_entries.c.id == row.id)
            .values(
                alternatives=kept,
                search_text=index_text(search),
                embedding=None,
                embedding_model="",
                changed_at=utcnow(),
            )
        )
        changed += 1
    if changed:
        forget_unused_text_vectors(conn)
    return changed


def forget_unused_text_vectors(conn: Connection) -> int:
    """Every model's vectors of texts that no entry or version has any more (a
    purged tenant's, a forgotten person's learned question), inside the caller's
    transaction; returns how many went. Texts shared with a remaining entry stay."""
    models = list(conn.execute(select(faq_text_vectors.c.model).distinct()).scalars())
    if not models:
        return 0
    columns = ("question", "alternatives", "answer")
    texts: set[str] = set()
    for table in (faq_entries, faq_versions):
        for row in conn.execute(select(*(table.c[name] for name in columns))):
            texts.update(vector_texts(row.question, list(row.alternatives or ()), row.answer))
    removed = 0
    for model in models:
        used = {text_key(model, t) for t in texts}
        stored = conn.execute(
            select(faq_text_vectors.c.digest).where(faq_text_vectors.c.model == model)
        ).scalars()
        gone = [d for d in stored if d not in used]
        for start in range(0, len(gone), 500):
            result = conn.execute(
                delete(faq_text_vectors).where(
                    faq_text_vectors.c.model == model,
                    faq_text_vectors.c.digest.in_(gone[start : start + 500]),
                )
            )
            removed += int(result.rowcount or 0)
    return removed
