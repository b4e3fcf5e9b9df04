"""In-memory dense index over the knowledge base, and hybrid scoring.

Each entry contributes one vector per phrasing (the question and its
alternatives) and one for question + answer, packed in that order into the
entry's ``embedding`` column (float32, little-endian). An entry's dense score is

    (max over phrasings of cos + W_QA * cos(question + answer)) / (1 + W_QA)

which stays on the cosine scale. (A separate answer-only vector was measured
too and added nothing on the evaluation set, at 40 % more embedding work.)
W_QA is the English model's; each model's is its ``ScoreScale.qa_weight``: the
multilingual model finds the right entry more often by question + answer,
whose longer text it places better across languages, than by the question.
The keyword score from the database (FTS5 bm25 / ts_rank_cd) is divided by
the best keyword score of the query and added with a small weight: it
re-orders close dense candidates when the customer uses the entry's own words
(product names, law references).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llm.embeddings import Embedder
from storage.faq_vectors import vector_texts
from storage.faq_versions import FaqVersion
from storage.keywords import keyword_terms
from storage.knowledge_repo import EntryInput, FaqEntry

W_QA = 1.0


def entry_texts(entry: EntryInput | FaqEntry | FaqVersion) -> list[str]:
    """The texts embedded for one entry, in storage order."""
    return vector_texts(entry.question, entry.alternatives, entry.answer)


def embed_entries(
    embedder: Embedder,
    entries: Sequence[EntryInput | FaqEntry | FaqVersion],
    *,
    batch: int = 256,
) -> list[bytes]:
    """Vectors for each entry, packed for the ``embedding`` column (blocking)."""
    texts: list[str] = []
    counts: list[int] = []
    for entry in entries:
        parts = entry_texts(entry)
        texts.extend(parts)
        counts.append(len(parts))
    chunks = [embedder.embed(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    matrix = np.concatenate(chunks) if chunks else np.zeros((0, embedder.dim), np.float32)
    out: list[bytes] = []
    row = 0
    for count in counts:
        out.append(np.ascontiguousarray(matrix[row : row + count], dtype="<f4").tobytes())
        row += count
    return out


def _combine(
    best_phrasing: np.ndarray | float, qa: np.ndarray | float, weight: float = W_QA
) -> np.ndarray | float:
    return (best_phrasing + weight * qa) / (1.0 + weight)


def entry_score(vectors: np.ndarray, query: np.ndarray) -> float:
    """The dense score of one entry from its stored vectors (phrasings..., q+a)."""
    sims = vectors @ query
    return float(_combine(sims[:-1].max(), sims[-1]))


def unpack(blob: bytes, dim: int) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").reshape(-1, dim)


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved entry. ``score`` orders hits; ``dense`` is the calibrated
    confidence (cosine scale) the answering policy compares with thresholds."""

    entry: FaqEntry
    score: float
    dense: float
    keyword: float


class VectorIndex:
    """Immutable snapshot of the knowledge base's vectors; rebuilt on change."""

    def __init__(
        self,
        entries: Sequence[FaqEntry],
        blobs: Sequence[bytes],
        dim: int,
        learned: Sequence[tuple[int, str, bytes]] = (),
        qa_weight: float = W_QA,
    ) -> None:
        """``learned``: (entry id, tenant, vector) of wordings customers chose;
        ``qa_weight``: the question + answer vector's weight (the model's)."""
        self.entries = list(entries)
        self.qa_weight = qa_weight
        self.dim = dim
        self.by_id = {e.id: i for i, e in enumerate(self.entries)}
        phrasings: list[np.ndarray] = []
        starts: list[int] = []
        qa = np.zeros((len(entries), dim), np.float32)
        offset = 0
        for i, blob in enumerate(blobs):
            vectors = unpack(blob, dim)
            if vectors.shape[0] < 2:
                raise ValueError(f"entry {self.entries[i].id}: stored vectors are incomplete")
            phrasings.append(vectors[:-1])
            starts.append(offset)
            offset += vectors.shape[0] - 1
            qa[i] = vectors[-1]
        self.phrasings = np.concatenate(phrasings) if phrasings else np.zeros((0, dim), np.float32)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.qa = qa
        self.tenants = np.asarray([e.tenant for e in self.entries], dtype=object)
        # Learned phrasings count as phrasings of their entry, but only for the
        # tenant that taught them (or every tenant, once shared).
        known = [(self.by_id[e], t, b) for e, t, b in learned if e in self.by_id and b]
        self.learned = (
            np.stack([unpack(b, dim)[0] for _, _, b in known])
            if known
            else np.zeros((0, dim), np.float32)
        )
        self.learned_entry = np.asarray([i for i, _, _ in known], dtype=np.int64)
        self.learned_tenant = np.asarray([t for _, t, _ in known], dtype=object)
        # The words the knowledge base uses, per tenant ("" for every tenant's).
        self.vocabulary: dict[str, set[str]] = {}
        for entry in self.entries:
            words = self.vocabulary.setdefault(entry.tenant, set())
            text = " ".join([entry.question, *entry.alternatives, entry.answer])
            words.update(keyword_terms(text, limit=100_000))

    def __len__(self) -> int:
        return len(self.entries)

    def coverage(self, question: str, tenant: str) -> float:
        """The share of the question's content words the tenant's entries use
        (1.0 for a question without content words: no evidence either way)."""
        terms = keyword_terms(question, limit=100)
        if not terms:
            return 1.0
        shared = self.vocabulary.get("", set())
        own = self.vocabulary.get(tenant, set()) if tenant else set()
        return sum(1 for t in terms if t in shared or t in own) / len(terms)

    def dense_scores(
        self, query: np.ndarray, tenant: str, qa_weight: float | None = None
    ) -> np.ndarray:
        """Dense score of every entry for one unit query vector; -inf where the
        entry is another tenant's. ``qa_weight``: this query's, when not the index's."""
        if not self.entries:
            return np.zeros(0, np.float32)
        per_phrasing = self.phrasings @ query
        best_phrasing = np.maximum.reduceat(per_phrasing, self.starts)
        if len(self.learned_entry):
            mine = (self.learned_tenant == "") | (self.learned_tenant == tenant)
            if mine.any():
                np.maximum.at(best_phrasing, self.learned_entry[mine], (self.learned @ query)[mine])
        weight = self.qa_weight if qa_weight is None else qa_weight
        scores = np.asarray(_combine(best_phrasing, self.qa @ query, weight))
        visible = (self.tenants == "") | (self.tenants == tenant)
        return np.where(visible, scores, -np.inf).astype(np.float32)

    def rank(
        self,
        query: np.ndarray,
        tenant: str,
        keyword: Sequence[tuple[int, float]],
        *,
        keyword_weight: float,
        limit: int,
        qa_weight: float | None = None,
    ) -> list[Hit]:
        dense = self.dense_scores(query, tenant, qa_weight)
        if dense.size == 0:
            return []
        kw = np.zeros_like(dense)
        best = max((s for _, s in keyword), default=0.0)
        if best > 0:
            for entry_id, score in keyword:
                index = self.by_id.get(entry_id)
                if index is not None:
                    kw[index] = score / best
        combined = dense + keyword_weight * kw
        count = min(limit, int(np.isfinite(combined).sum()))
        if count <= 0:
            return []
        top = np.argpartition(-combined, count - 1)[:count]
        top = top[np.argsort(-combined[top], kind="stable")]
        return [
            Hit(self.entries[i], float(combined[i]), float(dense[i]), float(kw[i])) for i in top
        ]
