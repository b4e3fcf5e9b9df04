"""Retrieval: the in-memory index over the FAQ tables, the embedding model it
was built with, and hybrid search (dense + keyword, then optional re-ranking).

Each search also says how likely the question is to be about the knowledge
base at all (``Lookup.scope``): how much closer the question is to the
knowledge base than to everyday background traffic (``background.txt``:
chit-chat and generic account questions no company's FAQ is meant to answer),
less a penalty for the share of its words the knowledge base never uses.
Adapting the embedding model to a FAQ pulls every text towards the FAQ's
vocabulary, off-topic questions included, so the scope is judged with the base
model's scores, for the adapted model's best candidates. Background questions
that are close to an entry of this knowledge base are about its domain and
are left out. bench/README.md has the measurements that set the weights.

The index is rebuilt when this process changes the knowledge base, and when
another process did (checked at most every ``refresh_interval`` seconds with
one cheap query). After ``deskmate faq tune`` the model adapted to the FAQ (a
folder under ``model_store``) replaces the base model on the next refresh, in
every process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bot.knowledge.index import (
    Hit,
    VectorIndex,
    embed_entries,
    entry_score,
    entry_texts,
    unpack,
)
from bot.knowledge.policy import scale_of
from bot.knowledge.rerank import LikelihoodReranker
from bot.language import detect_language
from llm.embeddings import Embedder, release_embedder, shared_embedder
from storage.faq_vectors import text_key
from storage.knowledge_repo import (
    DEPLOYMENT,
    EMBEDDING_MODEL_SETTING,
    GLOBAL,
    FaqEntry,
    FaqVersion,
    KnowledgeRepository,
)

log = logging.getLogger(__name__)

# Small on purpose: on the evaluation set's reworded questions keyword matches
# cost accuracy above ~0.05; it breaks ties between close entries and catches
# identifiers (law references, product names) dense vectors blur.
KEYWORD_WEIGHT = 0.02
# Scope score = base-model confidence
#   - COVERAGE_WEIGHT * (share of the question's words the knowledge base never uses)
#   - BACKGROUND_WEIGHT * (base-model similarity to the closest background question).
# Chosen on the tuning half of tests/data/faq as the weights that keep the most
# in-scope questions above the threshold refusing the most off-topic ones
# (bench/README.md).
COVERAGE_WEIGHT = 0.1
BACKGROUND_WEIGHT = 1.0
BACKGROUND_FILE = Path(__file__).with_name("background.txt")
# Candidates whose base-model scores are compared (the adapted model's best).
SCOPE_CANDIDATES = 10
_BASE_VECTOR_CACHE = 50_000


@dataclass(frozen=True, slots=True)
class Lookup:
    """The hits for a question (best first) and how likely it is in scope."""

    hits: list[Hit]
    scope: float  # cosine scale, compared with Policy.grounded_score


class Retriever:
    """Hybrid search over one knowledge base; one per process."""

    def __init__(
        self,
        *,
        repository: KnowledgeRepository,
        embedder: Embedder,
        refresh_interval: float = 2.0,
        model_store: Path | None = None,
        reranker: LikelihoodReranker | None = None,
        keyword_weight: float = KEYWORD_WEIGHT,
        background: Sequence[str] | None = None,
        own_vectors: bool = False,
    ) -> None:
        """``background``: everyday questions no FAQ answers (default: the shipped list).
        ``own_vectors``: a second model beside the deployment's, which never follows
        the adapted model and keeps its vectors in ``faq_text_vectors`` (learned
        wordings in memory only), leaving the entries' own columns alone."""
        self.repository = repository
        self.base_embedder = embedder
        # The model whose vectors fill ``_index``: the base model or the adapted one.
        self.embedder = embedder
        self.model_store = model_store
        self.reranker = reranker
        self.keyword_weight = keyword_weight
        self.refresh_interval = refresh_interval
        self.own_vectors = own_vectors
        self._own: dict[str, bytes] = {}
        self.texts_embedded = 0  # by ``own_vectors``, since this process started
        self._used: set[str] = set()  # digests the entries and versions have now
        self._live: set[str] = set()  # and the learned wordings
        self._languages: dict[int, str] = {}
        self._faq_languages: dict[str, tuple[str, frozenset[str]]] = {}
        self._index: VectorIndex | None = None
        self._signature: object = None
        self._checked_at = 0.0
        self._lock = asyncio.Lock()
        self._reported_missing: set[str] = set()
        # Base-model vectors of entries (and of learned wordings), by their texts:
        # only needed, and filled lazily, while an adapted model ranks.
        self._base_vectors: dict[tuple[str, ...], np.ndarray] = {}
        self._learned_texts: dict[int, list[tuple[str, str]]] = {}
        self._versions: dict[tuple[int, str], FaqVersion] = {}
        self._background_texts = list(load_background() if background is None else background)
        self._background_base: np.ndarray | None = None
        self._background_lock = threading.Lock()
        self._background_ranked: tuple[str, np.ndarray] = ("", np.zeros((0, 0), np.float32))
        # Base-model vectors of the background questions outside this knowledge base's domain.
        self._background: np.ndarray = np.zeros((0, 0), np.float32)

    def invalidate(self) -> None:
        """Rebuild the index on the next search (after writing to the database directly)."""
        self._checked_at = 0.0
        self._signature = None

    async def refresh(self, *, force: bool = False) -> VectorIndex:
        """Return an index that reflects the database (rebuilding when it changed)."""
        now = time.monotonic()
        if (
            not force
            and self._index is not None
            and self._signature is not None
            and now - self._checked_at < self.refresh_interval
        ):
            return self._index
        async with self._lock:
            wanted = None
            if not self.own_vectors:
                wanted = await self.repository.get_setting(DEPLOYMENT, EMBEDDING_MODEL_SETTING)
            signature = (await self.repository.signature(), wanted)
            self._checked_at = time.monotonic()
            if not force and self._index is not None and signature == self._signature:
                return self._index
            embedder, authoritative = await self._embedder_for(wanted)
            entries = await self.repository.entries(with_embeddings=not self.own_vectors)
            self._used, self._live = set(), set()
            if self.own_vectors:
                groups = [entry_texts(e) for e in entries]
                vectors = await self._own_blobs(embedder, groups, keep=True)
                entries = [
                    replace(e, embedding=v, embedding_model=embedder.name)
                    for e, v in zip(entries, vectors, strict=True)
                ]
            stale = [
                e for e in entries if e.embedding is None or e.embedding_model != embedder.name
            ]
            if stale:
                # Imported with another model (or none): embed again, once.
                log.info("computing embeddings for %d FAQ entries", len(stale))
                blobs = await asyncio.to_thread(embed_entries, embedder, stale)
                fresh = dict(zip((e.id for e in stale), blobs, strict=True))
                if authoritative:
                    # A process standing in with another model keeps its vectors to
                    # itself, or it would fight the processes that have the right one.
                    await self.repository.set_embeddings(fresh, embedding_model=embedder.name)
                entries = [_with_embedding(e, fresh[e.id]) if e.id in fresh else e for e in entries]
            blobs = [e.embedding or b"" for e in entries]
            learned, texts = await self._phrasing_vectors(embedder, authoritative)
            learned += await self._version_vectors(embedder, authoritative, entries)
            if self.own_vectors:
                # Texts no entry has any more (edited, removed, purged) leave no vector.
                await self.repository.prune_text_vectors(embedder.name, self._used)
                self._own = {d: v for d, v in self._own.items() if d in self._live}
            # ``dim`` may load the model to learn its width: off the event loop too.
            index = await asyncio.to_thread(
                lambda: VectorIndex(
                    entries, blobs, embedder.dim, learned, scale_of(embedder.name).qa_weight
                )
            )
            background = await asyncio.to_thread(self._background_for, index, embedder)
            languages = await asyncio.to_thread(_entry_languages, entries, self._languages)
            versions = {(v.entry_id, v.language) for v in self._versions.values()}
            # Swapped together, with no await between: a query is always embedded by
            # the model whose vectors fill the index it is ranked against.
            previous, (self._index, self.embedder) = self.embedder, (index, embedder)
            self._learned_texts, self._background = texts, background
            self._languages = languages
            self._faq_languages = _faq_languages(entries, languages, versions)
            if previous is not embedder and previous is not self.base_embedder:
                release_embedder(previous)
            self._signature = signature
            return index

    async def _phrasing_vectors(
        self, embedder: Embedder, authoritative: bool
    ) -> tuple[list[tuple[int, str, bytes]], dict[int, list[tuple[str, str]]]]:
        """(entry id, tenant, vector) of every learned wording, and their texts by entry."""
        phrasings = await self.repository.phrasings(with_embeddings=not self.own_vectors)
        texts: dict[int, list[tuple[str, str]]] = {}
        for p in phrasings:
            texts.setdefault(p.entry_id, []).append((p.tenant, p.text))
        if self.own_vectors:
            own = await self._own_blobs(embedder, [[p.text] for p in phrasings], keep=False)
            return [(p.entry_id, p.tenant, v) for p, v in zip(phrasings, own, strict=True)], texts
        stale = [p for p in phrasings if not p.embedding or p.embedding_model != embedder.name]
        fresh: dict[int, bytes] = {}
        if stale:
            vectors = await asyncio.to_thread(embedder.embed, [p.text for p in stale])
            fresh = {
                p.id: np.ascontiguousarray(v, dtype="<f4").tobytes()
                for p, v in zip(stale, vectors, strict=True)
            }
            if authoritative:
                await self.repository.set_phrasing_embeddings(fresh, embedding_model=embedder.name)
        vectors = [(p.entry_id, p.tenant, fresh.get(p.id) or p.embedding or b"") for p in phrasings]
        return vectors, texts

    async def _version_vectors(
        self, embedder: Embedder, authoritative: bool, entries: Sequence[FaqEntry]
    ) -> list[tuple[int, str, bytes]]:
        """The entries' versions in further languages, one row per phrasing of each
        (its question, alternatives and question + answer), as the entry's tenant's
        phrasings: a question in a version's language finds its entry."""
        versions = await self.repository.versions(with_embeddings=not self.own_vectors)
        stale = [v for v in versions if not v.embedding or v.embedding_model != embedder.name]
        fresh: dict[int, bytes] = {}
        if self.own_vectors:
            groups = [entry_texts(v) for v in versions]
            own = await self._own_blobs(embedder, groups, keep=True)
            fresh, stale = {v.id: b for v, b in zip(versions, own, strict=True)}, []
        if stale:
            fresh = dict(
                zip(
                    (v.id for v in stale),
                    await asyncio.to_thread(embed_entries, embedder, stale),
                    strict=True,
                )
            )
            if authoritative:
                await self.repository.set_version_embeddings(fresh, embedding_model=embedder.name)
        self._versions = {(v.entry_id, v.language): replace(v, embedding=None) for v in versions}
        tenants = {e.id: e.tenant for e in entries}
        rows: list[tuple[int, str, bytes]] = []
        for v in versions:
            if v.entry_id not in tenants:
                continue
            vectors = unpack(fresh.get(v.id) or v.embedding or b"", embedder.dim)
            rows += [(v.entry_id, tenants[v.entry_id], row.tobytes()) for row in vectors]
        return rows

    async def _own_blobs(
        self, embedder: Embedder, groups: Sequence[Sequence[str]], *, keep: bool
    ) -> list[bytes]:
        """Packed vectors of each group of texts under ``embedder`` (``own_vectors``):
        from memory, else ``faq_text_vectors``, else embedded now (and stored
        there when ``keep``)."""
        memo = self._own
        digests = [[text_key(embedder.name, t) for t in g] for g in groups]
        unknown = [d for g in digests for d in g if d not in memo]
        self._live.update(d for g in digests for d in g)
        if keep:
            self._used.update(d for g in digests for d in g)
            if unknown:
                memo.update(await self.repository.text_vectors(embedder.name, unknown))
        pairs = zip(groups, digests, strict=True)
        texts = {d: t for g, ds in pairs for t, d in zip(g, ds, strict=True)}
        missing = [d for d in dict.fromkeys(unknown) if d not in memo]
        if missing:
            log.info("embedding %d FAQ texts with %s", len(missing), embedder.name)
            vectors = await asyncio.to_thread(_embed_chunked, embedder, [texts[d] for d in missing])
            fresh = {d: v.astype("<f4").tobytes() for d, v in zip(missing, vectors, strict=True)}
            memo.update(fresh)
            if keep:
                await self.repository.set_text_vectors(embedder.name, fresh)
                self.texts_embedded += len(fresh)
        return [b"".join(memo[d] for d in g) for g in digests]

    def languages(self, tenant: str) -> tuple[str, frozenset[str]]:
        """The language most of ``tenant``'s visible entries are written in ("":
        not known), and the languages it has versions in, as of the last refresh."""
        return self._faq_languages.get(tenant) or self._faq_languages.get(GLOBAL, ("", frozenset()))

    def version(self, entry_id: int, language: str) -> FaqVersion | None:
        """The entry's version in ``language`` as of the last refresh (None: none)."""
        return self._versions.get((entry_id, language))

    async def current_embedder(self) -> Embedder:
        """The model new entries are embedded with: the deployment's, as stored now."""
        wanted = await self.repository.get_setting(DEPLOYMENT, EMBEDDING_MODEL_SETTING)
        return (await self._embedder_for(wanted))[0]

    async def _embedder_for(self, wanted: str | None) -> tuple[Embedder, bool]:
        """The embedder for the deployment's model setting, and whether it is that
        model (False: the base model standing in for a missing adapted one)."""
        base = self.base_embedder
        if not wanted or wanted == base.name:
            return base, True
        if self.embedder.name == wanted:
            return self.embedder, True
        folder = self.model_store / wanted if self.model_store is not None else None
        problem = "no model folder is configured"
        if folder is not None:
            problem = f"{folder} does not exist"
            if folder.is_dir():
                embedder = shared_embedder(model_dir=folder)
                try:
                    await asyncio.to_thread(embedder.load)
                    return embedder, True
                except Exception as exc:  # a damaged folder must not take retrieval down
                    problem = f"{folder} could not be loaded ({exc})"
        if wanted not in self._reported_missing:
            self._reported_missing.add(wanted)
            log.error(
                "the knowledge base uses the adapted embedding model %s, but %s; searching "
                "with %s meanwhile (copy that folder here, run `deskmate faq tune` again, or "
                "`deskmate faq tune --reset` to go back to the base model)",
                wanted,
                problem,
                base.name,
            )
        return base, False

    async def has_entries(self, tenant: str = GLOBAL) -> bool:
        """Whether any entry is visible to ``tenant`` (no model is loaded to tell)."""
        index = await self.refresh()
        return any(t in ("", tenant) for t in index.tenants)

    async def search(self, question: str, *, tenant: str = GLOBAL, limit: int = 5) -> list[Hit]:
        """Hybrid retrieval: dense scores fused with the database's keyword search."""
        return (await self.lookup(question, tenant=tenant, limit=limit)).hits

    async def lookup(
        self,
        question: str,
        *,
        tenant: str = GLOBAL,
        limit: int = 5,
        keyword_weight: float | None = None,
        qa_weight: float | None = None,
    ) -> Lookup:
        """``search``'s hits, and the question's scope score (``keyword_weight``,
        ``qa_weight``: the keyword half's and the question + answer vector's, when
        not the retriever's own)."""
        index = await self.refresh()
        embedder = self.embedder  # the model of ``index`` (read before any other await)
        learned_texts, background = self._learned_texts, self._background
        if not len(index) or not question.strip():
            return Lookup([], 0.0)
        base = self.base_embedder
        adapted = embedder is not base
        # The embeddings (worker threads) and the keyword query overlap; with an
        # adapted model the base model embeds the question too, for the scope.
        weight = self.keyword_weight if keyword_weight is None else keyword_weight
        vectors, keyword, *base_vectors = await asyncio.gather(
            asyncio.to_thread(embedder.embed, [question]),
            self._keywords(question, tenant) if weight else _nothing(),
            *([asyncio.to_thread(base.embed, [question])] if adapted else []),
        )
        reranker = self.reranker
        wanted = max(limit, reranker.candidates) if reranker is not None else limit
        hits = index.rank(
            np.asarray(vectors[0], dtype=np.float32),
            tenant,
            keyword,
            keyword_weight=weight,
            limit=max(wanted, SCOPE_CANDIDATES),
            qa_weight=qa_weight,
        )
        if not hits:
            return Lookup([], 0.0)
        if adapted:
            query = np.asarray(base_vectors[0][0], np.float32)
            confidence = await asyncio.to_thread(
                self._base_confidence, query, hits[:SCOPE_CANDIDATES], tenant, learned_texts
            )
        else:
            confidence, query = max(h.dense for h in hits), np.asarray(vectors[0], np.float32)
        usual = float((background @ query).max()) if len(background) else 0.0
        scope = (
            confidence
            - scale_of(base.name).coverage_weight * (1.0 - index.coverage(question, tenant))
            - BACKGROUND_WEIGHT * usual
        )
        hits = hits[:wanted]
        if reranker is not None:
            hits = await reranker.rerank(question, hits)
        return Lookup(hits[:limit], scope)

    async def _keywords(self, question: str, tenant: str) -> list[tuple[int, float]]:
        return await self.repository.keyword_search(question, tenant=tenant, limit=50)

    def _base_confidence(
        self,
        query: np.ndarray,
        candidates: Sequence[Hit],
        tenant: str,
        learned_texts: dict[int, list[tuple[str, str]]],
    ) -> float:
        """The base model's best score among ``candidates`` for the base model's
        vector of the question (blocking when an entry's vectors are not cached)."""
        groups: list[tuple[str, ...]] = []
        for hit in candidates:
            entry = hit.entry
            texts = entry_texts(entry)
            mine = [t for who, t in learned_texts.get(entry.id, ()) if who in ("", tenant)]
            # Learned wordings count as phrasings: before the question + answer text.
            groups.append((*texts[:-1], *mine, texts[-1]))
        cache = self._base_vectors
        known = {g: cache.get(g) for g in groups}
        missing = [g for g, v in known.items() if v is None]
        if missing:
            vectors = self.base_embedder.embed([t for g in missing for t in g])
            if len(cache) > _BASE_VECTOR_CACHE:
                cache.clear()
            row = 0
            for group in missing:
                known[group] = cache[group] = vectors[row : row + len(group)]
                row += len(group)
        return max(entry_score(v, query) for v in known.values() if v is not None)

    def _background_for(self, index: VectorIndex, embedder: Embedder) -> np.ndarray:
        """Base-model vectors of the background questions outside ``index``'s domain
        (blocking): those whose best deployment-wide entry scores under
        the model's ``ScoreScale.background_in_domain`` with the ranking model."""
        texts = self._background_texts
        if not texts or not len(index):
            return np.zeros((0, 0), np.float32)
        with self._background_lock:
            if self._background_base is None:
                self._background_base = np.asarray(self.base_embedder.embed(texts), np.float32)
            base = self._background_base
            # Every index rebuild (an edit, a learned wording) checks them again; the
            # ranking model's vectors of the same texts only change with the model.
            if embedder is self.base_embedder:
                ranked = base
            elif self._background_ranked[0] == embedder.name:
                ranked = self._background_ranked[1]
            else:
                ranked = np.asarray(embedder.embed(texts), np.float32)
                self._background_ranked = (embedder.name, ranked)
        best = np.asarray(
            [index.dense_scores(np.asarray(v, np.float32), GLOBAL).max() for v in ranked]
        )
        return base[best < scale_of(self.base_embedder.name).background_in_domain]


def load_background(path: Path = BACKGROUND_FILE) -> list[str]:
    """The background questions shipped with Deskmate (comments skipped)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _with_embedding(entry: FaqEntry, blob: bytes) -> FaqEntry:
    return replace(entry, embedding=blob)


async def _nothing() -> list[tuple[int, float]]:
    return []


def _embed_chunked(embedder: Embedder, texts: Sequence[str], batch: int = 64) -> np.ndarray:
    chunks = [embedder.embed(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    return np.concatenate(chunks) if chunks else np.zeros((0, embedder.dim), np.float32)


def _entry_languages(entries: Sequence[FaqEntry], known: dict[int, str]) -> dict[int, str]:
    """Each entry's language, detected on its question and answer ("": not told);
    entries seen before keep theirs (blocking: the detector loads once)."""
    out: dict[int, str] = {}
    for entry in entries:
        if entry.id not in known:
            known = {**known, entry.id: detect_language(f"{entry.question} {entry.answer}") or ""}
        out[entry.id] = known[entry.id]
    return out


def _faq_languages(
    entries: Sequence[FaqEntry], languages: dict[int, str], versions: set[tuple[int, str]]
) -> dict[str, tuple[str, frozenset[str]]]:
    """Per tenant ("" for the shared entries): the language most of the entries it
    sees are written in, and the languages most of them have a version in."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    shared = [e for e in entries if e.tenant == GLOBAL]
    for tenant in dict.fromkeys([GLOBAL, *(e.tenant for e in entries)]):
        own = [e for e in entries if e.tenant == tenant] if tenant != GLOBAL else []
        seen = [*shared, *own]
        counts = Counter(languages.get(e.id, "") for e in seen)
        counts.pop("", None)
        main = counts.most_common(1)[0][0] if counts else ""
        ids = {e.id for e in seen}
        counted = Counter(lang for entry_id, lang in versions if entry_id in ids)
        # A language most entries have a version in is matched as the FAQ's own.
        out[tenant] = (main, frozenset(lang for lang, n in counted.items() if 2 * n >= len(ids)))
    return out
