"""Document passages as a knowledge source (kind ``document``).

Ranking is hybrid, like the FAQ's: each passage has two vectors (its heading
path, and heading path + text); its dense score is

    (HEADING_WEIGHT * cos(heading) + cos(heading + text)) / (1 + HEADING_WEIGHT)

on the cosine scale, plus ``KEYWORD_WEIGHT`` times the database's keyword
score (FTS5 bm25 / ts_rank_cd) divided by the query's best one.

Scope: a passage is a longer text than a question, so its cosine is lower
than an FAQ question's for the same match; the source judges scope as the
best passage's dense score less the question's similarity to the closest
everyday background question (``background.txt``, the FAQ's list) and less a
penalty for the share of the question's words no passage uses. An off-topic
question is closer to the background than to any page, and is escalated.

The index is rebuilt when this process changed the documents and when another
process did (one cheap query at most every ``refresh_interval`` seconds), so
documents added with ``deskmate docs add`` or the console reach a running bot
within seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np

from bot.knowledge.passages import DOCUMENT, Found, Passage
from bot.knowledge.retrieval import load_background
from llm.embeddings import Embedder
from storage.documents_repo import ChunkRecord, DocumentsRepository
from storage.knowledge_repo import keyword_terms

HEADING_WEIGHT = 0.25
KEYWORD_WEIGHT = 0.02
COVERAGE_WEIGHT = 0.1
BACKGROUND_WEIGHT = 0.3
# Added to the scope so that it sits on the FAQ's scale (Policy.grounded_score
# of 0). With the weights above, chosen on the tuning half of the manual
# benchmark (bench/data/manual): every question about the manual kept and 90 %
# of the off-topic ones escalated, in its HTML and its PDF form alike.
SCOPE_OFFSET = -0.2
# A background question at least this close to a passage is within the
# documents' domain and is not held against questions.
BACKGROUND_IN_DOMAIN = 0.5


@dataclass(frozen=True, slots=True)
class _Index:
    chunks: list[ChunkRecord]
    heading: np.ndarray
    full: np.ndarray
    tenants: np.ndarray
    internal: np.ndarray
    by_id: dict[int, int]
    vocabulary: dict[str, set[str]]
    # Vectors of the background questions outside the documents' domain.
    background: np.ndarray

    def visible(self, tenant: str) -> np.ndarray:
        return (self.tenants == "") | (self.tenants == tenant)


def _empty(dim: int) -> _Index:
    zero = np.zeros((0, dim), np.float32)
    empty = np.asarray([], dtype=object)
    return _Index([], zero, zero, empty, np.zeros(0, bool), {}, {}, zero)


class DocumentSource:
    """The passages of the stored documents; ``base_url`` is where local and
    uploaded files are published (their citations link there)."""

    kind = DOCUMENT

    def __init__(
        self,
        *,
        repository: DocumentsRepository,
        embedder: Embedder,
        base_url: str = "",
        refresh_interval: float = 2.0,
        background: Sequence[str] | None = None,
    ) -> None:
        self.repository = repository
        self.embedder = embedder
        self.base_url = base_url.rstrip("/")
        self.refresh_interval = refresh_interval
        self._index: _Index | None = None
        self._signature: object = None
        self._checked_at = 0.0
        self._lock = asyncio.Lock()
        self._background_texts = list(load_background() if background is None else background)
        self._background: np.ndarray | None = None

    def invalidate(self) -> None:
        self._signature = None
        self._checked_at = 0.0

    async def refresh(self) -> _Index:
        now = time.monotonic()
        fresh = now - self._checked_at < self.refresh_interval
        if self._index is not None and self._signature is not None and fresh:
            return self._index
        async with self._lock:
            signature = await self.repository.signature()
            self._checked_at = time.monotonic()
            if self._index is not None and signature == self._signature:
                return self._index
            chunks = await self.repository.chunks() if signature[0] else []
            index = await asyncio.to_thread(self._build, chunks) if chunks else None
            self._index = index if index is not None else _empty(1)
            self._signature = signature
            return self._index

    def _build(self, chunks: list[ChunkRecord]) -> _Index:
        """The index over ``chunks`` (blocking: passages stored with another
        model are embedded again here, and kept only in memory)."""
        model = self.embedder.name
        stale = [c for c in chunks if c.embedding is None or c.embedding_model != model]
        fresh: dict[int, np.ndarray] = {}
        if stale:
            texts = [t for c in stale for t in _embedded(c)]
            vectors = np.asarray(self.embedder.embed(texts), np.float32)
            fresh = {c.id: vectors[2 * i : 2 * i + 2] for i, c in enumerate(stale)}
        dim = self.embedder.dim
        pairs = np.zeros((len(chunks), 2, dim), np.float32)
        for i, chunk in enumerate(chunks):
            vectors = fresh.get(chunk.id)
            if vectors is None:
                vectors = np.frombuffer(chunk.embedding or b"", dtype="<f4").reshape(2, dim)
            pairs[i] = vectors
        vocabulary: dict[str, set[str]] = {}
        for chunk in chunks:
            words = vocabulary.setdefault(chunk.tenant, set())
            words.update(keyword_terms(f"{chunk.section} {chunk.text}", limit=100_000))
        return _Index(
            chunks=chunks,
            heading=np.ascontiguousarray(pairs[:, 0]),
            full=np.ascontiguousarray(pairs[:, 1]),
            tenants=np.asarray([c.tenant for c in chunks], dtype=object),
            internal=np.asarray([c.internal for c in chunks], dtype=bool),
            by_id={c.id: i for i, c in enumerate(chunks)},
            vocabulary=vocabulary,
            background=self._outside_domain(pairs),
        )

    def _outside_domain(self, pairs: np.ndarray) -> np.ndarray:
        """The background questions' vectors, less those close to a passage."""
        dim = pairs.shape[-1]
        if self._background is None:
            texts = self._background_texts
            vectors = self.embedder.embed(texts) if texts else np.zeros((0, dim))
            self._background = np.asarray(vectors, np.float32).reshape(-1, dim)
        background = self._background
        if not len(background) or not len(pairs):
            return background
        closest = np.full(len(background), -1.0, np.float32)
        for start in range(0, len(pairs), 5000):
            part = pairs[start : start + 5000]
            scores = HEADING_WEIGHT * part[:, 0] @ background.T + part[:, 1] @ background.T
            closest = np.maximum(closest, (scores / (1 + HEADING_WEIGHT)).max(axis=0))
        return background[closest < BACKGROUND_IN_DOMAIN]

    async def has_passages(self, tenant: str) -> bool:
        index = await self.refresh()
        return bool(len(index.chunks)) and bool(index.visible(tenant).any())

    async def lookup(self, question: str, *, tenant: str, limit: int) -> Found:
        index = await self.refresh()
        if not index.chunks or not question.strip():
            return Found((), 0.0)
        vectors, keyword = await asyncio.gather(
            asyncio.to_thread(self.embedder.embed, [question]),
            self.repository.keyword_search(question, tenant=tenant, limit=50),
        )
        query = np.asarray(vectors[0], np.float32)
        dense = (HEADING_WEIGHT * (index.heading @ query) + index.full @ query) / (
            1 + HEADING_WEIGHT
        )
        visible = index.visible(tenant)
        dense = np.where(visible, dense, -np.inf)
        kw = np.zeros_like(dense)
        best_keyword = max((s for _, s in keyword), default=0.0)
        for chunk_id, score in keyword:
            row = index.by_id.get(chunk_id)
            if row is not None and best_keyword > 0:
                kw[row] = score / best_keyword
        combined = dense + KEYWORD_WEIGHT * kw
        count = min(limit, int(np.isfinite(combined).sum()))
        if count <= 0:
            return Found((), 0.0)
        top = np.argpartition(-combined, count - 1)[:count]
        top = top[np.argsort(-combined[top], kind="stable")]
        passages = tuple(
            self._passage(index.chunks[i], float(combined[i]), float(dense[i]), float(kw[i]))
            for i in top
        )
        # The scope is a customer's: internal passages must not keep a question
        # from being escalated that nothing public answers.
        public = dense[~index.internal]
        best = (
            float(public.max()) if len(public) and np.isfinite(public.max()) else float(dense.max())
        )
        return Found(passages, self._scope(index, query, question, tenant, best))

    def _scope(
        self, index: _Index, query: np.ndarray, question: str, tenant: str, best: float
    ) -> float:
        background = index.background
        usual = float((background @ query).max()) if len(background) else 0.0
        terms = keyword_terms(question, limit=100)
        known = index.vocabulary.get("", set()) | (
            index.vocabulary.get(tenant, set()) if tenant else set()
        )
        coverage = sum(1 for t in terms if t in known) / len(terms) if terms else 1.0
        return best - BACKGROUND_WEIGHT * usual - COVERAGE_WEIGHT * (1 - coverage) + SCOPE_OFFSET

    async def passage(self, id: str, *, tenant: str) -> Passage | None:
        index = await self.refresh()
        row = index.by_id.get(int(id)) if id.isdigit() else None
        if row is None:
            return None
        chunk = index.chunks[row]
        if chunk.tenant not in ("", tenant):
            return None
        return self._passage(chunk, 1.0, 1.0, 0.0)

    def _passage(self, chunk: ChunkRecord, score: float, dense: float, keyword: float) -> Passage:
        return Passage(
            kind=DOCUMENT,
            id=str(chunk.id),
            title=chunk.document_title or chunk.document_name,
            text=chunk.text,
            score=score,
            dense=dense,
            keyword=keyword,
            tenant=chunk.tenant,
            origin=chunk.document_name,
            section=chunk.section,
            anchor=chunk.anchor,
            page=chunk.page,
            url=self.link(chunk),
            internal=chunk.internal,
        )

    def link(self, chunk: ChunkRecord) -> str:
        """Where a customer reads the passage: the page (at its anchor), or the
        published copy of a file (``base_url``; at its anchor or ``#page=N``)."""
        if chunk.document_origin == "url":
            base = chunk.document_location
        elif self.base_url:
            base = f"{self.base_url}/{quote(chunk.document_name)}"
        else:
            return ""
        if chunk.page is not None:
            return f"{base}#page={chunk.page}"
        return f"{base}#{chunk.anchor}" if chunk.anchor else base


def _embedded(chunk: ChunkRecord) -> tuple[str, str]:
    heading = chunk.section or chunk.document_title
    return heading, f"{heading}\n{chunk.text}"
