"""Vectors of FAQ texts under a second embedding model (``faq_text_vectors``).

The entries' own ``embedding`` columns hold the vectors of the model that ranks
English (the adapted one after ``faq tune``). The multilingual model that ranks
every other language keeps its vectors here instead, by model and by a digest
of the text, so a process that starts (``deskmate ask``, a new worker) reads
them rather than embedding the whole FAQ again, and an edited text simply gets
a new row. Only entries' and versions' texts are kept: customers' learned
wordings are embedded in memory, so forgetting a person leaves nothing here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from sqlalchemy import (
    Column,
    Connection,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    delete,
    select,
)

from storage.schema import metadata

faq_text_vectors = Table(
    "faq_text_vectors",
    metadata,
    Column("model", String(200), nullable=False),
    # sha256 of the text, hex: the text itself is in the FAQ tables.
    Column("digest", String(64), nullable=False),
    Column("vector", LargeBinary, nullable=False),  # float32, little-endian
    PrimaryKeyConstraint("model", "digest", name="pk_faq_text_vectors"),
)


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def vector_texts(question: str, alternatives: Sequence[str], answer: str) -> list[str]:
    """The texts embedded for one entry or version, in storage order: each
    phrasing (the question first), then question + answer."""
    return [question, *alternatives, f"{question} {answer}"]


def text_key(model: str, text: str) -> str:
    """The digest ``model``'s vector of ``text`` is stored under."""
    return text_digest(f"{model}\n{text}")


def load_text_vectors(conn: Connection, model: str, digests: Sequence[str]) -> dict[str, bytes]:
    """The stored vectors of those digests under ``model`` (missing ones left out)."""
    out: dict[str, bytes] = {}
    wanted = list(dict.fromkeys(digests))
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = conn.execute(
            select(faq_text_vectors.c.digest, faq_text_vectors.c.vector).where(
                faq_text_vectors.c.model == model, faq_text_vectors.c.digest.in_(chunk)
            )
        )
        out.update({r.digest: bytes(r.vector) for r in rows})
    return out


def put_text_vectors(conn: Connection, model: str, vectors: Iterable[tuple[str, bytes]]) -> None:
    """Store vectors by digest; a digest already stored (another process was
    first: same text, same model, same vector) is left as it is."""
    fresh = dict(vectors)
    known = load_text_vectors(conn, model, list(fresh))
    rows = [{"model": model, "digest": d, "vector": v} for d, v in fresh.items() if d not in known]
    if rows:
        conn.execute(faq_text_vectors.insert(), rows)


def prune_text_vectors(conn: Connection, model: str, used: set[str]) -> int:
    """Remove ``model``'s vectors of texts no entry or version has any more (an
    edited, removed or purged entry's), so nothing of a forgotten text stays."""
    stored = conn.execute(
        select(faq_text_vectors.c.digest).where(faq_text_vectors.c.model == model)
    ).scalars()
    gone = [d for d in stored if d not in used]
    for start in range(0, len(gone), 500):
        conn.execute(
            delete(faq_text_vectors).where(
                faq_text_vectors.c.model == model,
                faq_text_vectors.c.digest.in_(gone[start : start + 500]),
            )
        )
    return len(gone)
