"""The knowledge base: import, retrieval and the answering policy.

Policy (thresholds in ``Policy``, defaults tuned on tests/data/faq):

- ``verbatim``: the best entry is a confident match (score and lead over the
  runner-up) -> its curated answer word for word, with its source. No model.
- ``grounded``: a plausible match -> the model answers from the top entries
  only and must cite them; an answer that cites nothing, cites entries that
  were not given, or shares too little with them is discarded (verbatim if
  the best entry is still likely enough, else escalated).
- ``escalated``: nothing relevant -> say so, offer a human, open an escalation.

Every decision is logged with the entries it used and their scores.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from bot.knowledge.importer import ParseResult, RowIssue, parse_file
from bot.knowledge.index import Hit, VectorIndex, embed_entries
from bot.knowledge.rerank import LikelihoodReranker
from llm.base import Backend, ChatMessage, GenerationRequest, LLMError, SamplingParams
from llm.embeddings import Embedder, release_embedder, shared_embedder
from storage.knowledge_repo import (
    DEPLOYMENT,
    EMBEDDING_MODEL_SETTING,
    GLOBAL,
    EntryInput,
    FaqEntry,
    KnowledgeRepository,
    UpsertResult,
    keyword_terms,
)

log = logging.getLogger(__name__)

Path_ = Literal["verbatim", "grounded", "escalated", "model"]
Mode = Literal["support", "faq", "assistant"]
MODES: tuple[str, ...] = ("support", "faq", "assistant")

ESCALATION_TEXT = (
    "I don't have a reliable answer to that in our knowledge base, so I won't guess. "
    "I've passed your question to a human colleague, who will follow up here."
)
NO_ANSWER = "NO_ANSWER"


@dataclass(frozen=True, slots=True)
class Policy:
    """Score thresholds on the dense (cosine-scale) confidence of the best entry."""

    # Tuned on tests/data/faq (bench/README.md): verbatim answers are the
    # right entry 98.8 % of the time; 98 % of out-of-scope questions fall
    # under grounded_score while 3.7 % of in-scope ones do.
    verbatim_score: float = 0.65
    verbatim_margin: float = 0.02
    grounded_score: float = 0.45
    # After a model answer fails the guard, the best entry is still shown
    # verbatim when at least this likely; otherwise the question is escalated.
    fallback_verbatim_score: float = 0.55
    # Small on purpose: on the evaluation set's reworded questions keyword
    # matches cost accuracy above ~0.05; it breaks ties between close entries
    # and catches identifiers (law references, product names) dense vectors blur.
    keyword_weight: float = 0.02
    grounded_entries: int = 3
    max_grounded_tokens: int = 220


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy chose for one question, before any model call."""

    path: Literal["verbatim", "grounded", "escalated"]
    hits: tuple[Hit, ...]  # best first; the entries the answer may use
    confidence: float  # dense score of the best entry (0 when none)
    margin: float  # its lead over the runner-up
    reason: str

    @property
    def entries(self) -> list[FaqEntry]:
        return [h.entry for h in self.hits]

    @property
    def scores(self) -> list[float]:
        return [h.dense for h in self.hits]


@dataclass(frozen=True, slots=True)
class Source:
    id: str  # external id when imported with one, else the row id
    score: float
    question: str = ""
    source: str = ""


@dataclass(frozen=True, slots=True)
class KnowledgeAnswer:
    text: str
    path: Path_
    sources: tuple[Source, ...]
    decision: Decision | None
    answer_id: int | None = None
    escalation_id: int | None = None

    def as_json(self, question: str) -> dict[str, object]:
        return {
            "question": question,
            "answer": self.text,
            "path": self.path,
            "sources": [{"id": s.id, "score": round(s.score, 4)} for s in self.sources],
        }


@dataclass(slots=True)
class ImportReport:
    path: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[RowIssue] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"{self.path}: {self.created} added, {self.updated} updated, "
            f"{self.unchanged} unchanged, {len(self.skipped)} skipped"
        ]
        out += [f"  skipped {issue}" for issue in self.skipped]
        return out


Progress = Callable[[int, int], None]


class KnowledgeBase:
    """Retrieval and answering over the FAQ tables; one per process.

    The in-memory index is rebuilt when this process changes the knowledge
    base, and when another process did (checked at most every
    ``refresh_interval`` seconds with one cheap query).
    """

    def __init__(
        self,
        *,
        repository: KnowledgeRepository,
        embedder: Embedder,
        backend: Backend | None = None,
        policy: Policy | None = None,
        refresh_interval: float = 2.0,
        llm_timeout: float | None = 60.0,
        model_store: Path | None = None,
        reranker: LikelihoodReranker | None = None,
    ) -> None:
        self.repository = repository
        # ``embedder`` is the base model; after ``deskmate faq tune`` the model
        # adapted to this knowledge base (a folder under ``model_store``) replaces
        # it in ``self.embedder`` on the next refresh, in every process.
        self.base_embedder = embedder
        self.embedder = embedder
        self.model_store = model_store
        self.backend = backend
        self.reranker = reranker
        self.policy = policy or Policy()
        self.refresh_interval = refresh_interval
        self.llm_timeout = llm_timeout
        self._index: VectorIndex | None = None
        self._signature: object = None
        self._checked_at = 0.0
        self._lock = asyncio.Lock()
        self._reported_missing: set[str] = set()

    # -- content -------------------------------------------------------------------

    async def import_file(
        self,
        path: Path,
        *,
        tenant: str = GLOBAL,
        fmt: str | None = None,
        mapping: dict[str, str] | None = None,
        progress: Progress | None = None,
    ) -> ImportReport:
        """Parse, embed and store a file in one transaction (all rows or none).

        Malformed rows are skipped and listed in the report; a fatal problem
        raises ``KnowledgeImportError`` before anything is stored.
        """
        parsed = await asyncio.to_thread(parse_file, path, fmt=fmt, mapping=mapping)
        report = ImportReport(path=str(path), skipped=list(parsed.issues))
        result = await self.store(parsed, tenant=tenant, progress=progress)
        report.created, report.updated, report.unchanged = (
            result.created,
            result.updated,
            result.unchanged,
        )
        return report

    async def store(
        self, parsed: ParseResult, *, tenant: str = GLOBAL, progress: Progress | None = None
    ) -> UpsertResult:
        entries = [row.entry for row in parsed.rows]
        embedder = await self._current_embedder()
        blobs = await asyncio.to_thread(self._embed_with_progress, embedder, entries, progress)
        result = await self.repository.upsert_many(
            tenant, list(zip(entries, blobs, strict=True)), embedding_model=embedder.name
        )
        self.invalidate()
        return result

    @staticmethod
    def _embed_with_progress(
        embedder: Embedder,
        entries: Sequence[EntryInput],
        progress: Progress | None,
        step: int = 64,
    ) -> list[bytes]:
        out: list[bytes] = []
        for start in range(0, len(entries), step):
            out.extend(embed_entries(embedder, entries[start : start + step]))
            if progress is not None:
                progress(min(start + step, len(entries)), len(entries))
        if progress is not None and not entries:
            progress(0, 0)
        return out

    async def add(self, entry: EntryInput, *, tenant: str = GLOBAL) -> UpsertResult:
        embedder = await self._current_embedder()
        blob = await asyncio.to_thread(embed_entries, embedder, [entry])
        result = await self.repository.upsert_many(
            tenant, [(entry, blob[0])], embedding_model=embedder.name
        )
        self.invalidate()
        return result

    async def remove(self, ref: str, *, tenant: str = GLOBAL) -> FaqEntry | None:
        removed = await self.repository.remove(tenant, ref)
        self.invalidate()
        return removed

    def invalidate(self) -> None:
        """Rebuild the index on the next search (after writing to the database directly)."""
        self._checked_at = 0.0
        self._signature = None

    # -- retrieval -------------------------------------------------------------------

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
            wanted = await self.repository.get_setting(DEPLOYMENT, EMBEDDING_MODEL_SETTING)
            signature = (await self.repository.signature(), wanted)
            self._checked_at = time.monotonic()
            if not force and self._index is not None and signature == self._signature:
                return self._index
            embedder, authoritative = await self._embedder_for(wanted)
            entries = await self.repository.entries(with_embeddings=True)
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
            # ``dim`` may load the model to learn its width: off the event loop too.
            index = await asyncio.to_thread(lambda: VectorIndex(entries, blobs, embedder.dim))
            # Swapped together, with no await between: a query is always embedded by
            # the model whose vectors fill the index it is ranked against.
            previous, (self._index, self.embedder) = self.embedder, (index, embedder)
            if previous is not embedder and previous is not self.base_embedder:
                release_embedder(previous)
            self._signature = signature
            return index

    async def _current_embedder(self) -> Embedder:
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
        index = await self.refresh()
        embedder = self.embedder  # the model of ``index`` (read before any other await)
        if not len(index) or not question.strip():
            return []
        # The embedding (a worker thread) and the keyword query overlap.
        vectors, keyword = await asyncio.gather(
            asyncio.to_thread(embedder.embed, [question]),
            self.repository.keyword_search(question, tenant=tenant, limit=50),
        )
        reranker = self.reranker
        hits = index.rank(
            np.asarray(vectors[0], dtype=np.float32),
            tenant,
            keyword,
            keyword_weight=self.policy.keyword_weight,
            limit=max(limit, reranker.candidates) if reranker is not None else limit,
        )
        if reranker is not None:
            hits = await reranker.rerank(question, hits)
        return hits[:limit]

    async def decide(self, question: str, tenant: str = GLOBAL) -> Decision:
        """Choose verbatim / grounded / escalated for a question (no text is generated)."""
        limit = max(self.policy.grounded_entries, 2)
        return self.decide_hits(await self.search(question, tenant=tenant, limit=limit))

    def decide_hits(self, hits: Sequence[Hit]) -> Decision:
        """The policy applied to already retrieved hits (best first)."""
        policy = self.policy
        if not hits:
            return Decision("escalated", (), 0.0, 0.0, "the knowledge base is empty")
        best = hits[0]
        runner_up = hits[1].score if len(hits) > 1 else -1.0
        margin = best.score - runner_up
        confidence = best.dense
        if confidence >= policy.verbatim_score and margin >= policy.verbatim_margin:
            return Decision("verbatim", (best,), confidence, margin, "confident match")
        if confidence >= policy.grounded_score:
            reason = "close runner-up" if confidence >= policy.verbatim_score else "partial match"
            top = tuple(
                h for h in hits[: policy.grounded_entries] if h.dense >= policy.grounded_score
            )
            return Decision("grounded", top, confidence, margin, reason)
        return Decision(
            "escalated", tuple(hits[:1]), confidence, margin, "no entry is close enough"
        )

    # -- per-scope settings (mode, persona, open draft) ------------------------------

    async def mode_for(self, conversation_key: str, tenant: str) -> str:
        """The conversation's mode, else its tenant's, else ``support``."""
        for scope in (f"conversation:{conversation_key}", f"tenant:{tenant}"):
            value = await self.repository.get_setting(scope, "mode")
            if value in MODES:
                return value
        return "support"

    async def set_mode(self, scope: str, mode: str | None) -> None:
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        await self.repository.set_setting(scope, "mode", mode)

    async def persona(self, tenant: str) -> str:
        return await self.repository.get_setting(f"tenant:{tenant}", "persona") or ""

    async def set_persona(self, tenant: str, text: str | None) -> None:
        await self.repository.set_setting(f"tenant:{tenant}", "persona", text)

    async def open_draft(self, conversation_key: str) -> str | None:
        return await self.repository.get_setting(f"conversation:{conversation_key}", "draft")

    async def set_draft(self, conversation_key: str, raw: str | None) -> None:
        await self.repository.set_setting(f"conversation:{conversation_key}", "draft", raw)

    # -- answering ---------------------------------------------------------------------

    async def answer(
        self,
        question: str,
        *,
        tenant: str = GLOBAL,
        mode: str = "support",
        conversation_key: str = "",
        user_id: str = "",
        system_prompt: str = "",
    ) -> KnowledgeAnswer | None:
        """Answer from the knowledge base under ``mode`` and log the outcome.

        Returns ``None`` only in ``assistant`` mode when nothing in the
        knowledge base is relevant: the caller then chats with the model freely.
        """
        decision = await self.decide(question, tenant)
        path: Path_ = decision.path
        text = ""
        used: tuple[Hit, ...] = decision.hits
        reason = decision.reason
        if decision.path == "escalated" and mode == "assistant":
            return None
        if decision.path == "grounded" and mode == "faq":
            # FAQ mode never calls the model: only a confident match is answered.
            path, reason = "escalated", f"faq mode, {decision.reason}"
            text = _suggestions(decision.hits)
        elif decision.path == "grounded":
            text = await self._grounded(question, decision.hits, system_prompt) or ""
            if not text:
                best = decision.hits[0]
                if best.dense >= self.policy.fallback_verbatim_score:
                    path, used, reason = "verbatim", (best,), "model answer failed the guard"
                else:
                    path, reason = "escalated", "model answer failed the guard"
            else:
                text = text + "\n\n" + _cite_list(decision.hits)
        if path == "verbatim":
            text = _verbatim(used[0].entry)
        elif path == "escalated":
            text = (text + "\n\n" + ESCALATION_TEXT) if text else ESCALATION_TEXT
        sources = tuple(
            Source(h.entry.ref, h.dense, h.entry.question, h.entry.source) for h in used
        )
        logged = [
            {
                "id": h.entry.id,
                "ref": h.entry.ref,
                "score": round(h.dense, 4),
                "keyword": round(h.keyword, 4),
            }
            for h in decision.hits
        ]
        answer_id, escalation_id = await self.repository.record_answer(
            tenant=tenant,
            conversation_key=conversation_key,
            question=question,
            path=path,
            entries=logged,
            answer=text,
            escalate_reason=reason if path == "escalated" else None,
            user_id=user_id,
        )
        return KnowledgeAnswer(text, path, sources, decision, answer_id, escalation_id)

    async def _grounded(self, question: str, hits: Sequence[Hit], system_prompt: str) -> str | None:
        """The model's cited answer from ``hits``, or None when it fails the guard."""
        if self.backend is None:
            return None
        request = GenerationRequest(
            messages=grounded_prompt(question, hits, system_prompt),
            sampling=SamplingParams(
                max_new_tokens=self.policy.max_grounded_tokens, temperature=0.0
            ),
            timeout=self.llm_timeout,
            tag="faq-grounded",
        )
        parts: list[str] = []
        try:
            async for delta in self.backend.stream(request):
                parts.append(delta.text)
        except LLMError as exc:
            log.warning("grounded answer failed: %s", exc)
            return None
        output = "".join(parts).strip()
        verdict = check_grounded(output, question, hits)
        if verdict:
            log.info("grounded answer discarded: %s", verdict)
            return None
        return output


def grounded_prompt(
    question: str, hits: Sequence[Hit], system_prompt: str = ""
) -> list[ChatMessage]:
    """Messages asking the model to answer only from ``hits``, citing ``[n]``."""
    rules = (
        "Answer the customer's question using ONLY the numbered FAQ entries given. "
        "Cite every entry you use as [1], [2], ... right after the sentence it supports. "
        "Do not add facts, prices, deadlines or policies that are not in the entries. "
        f"If the entries do not answer the question, reply with exactly {NO_ANSWER}."
    )
    system = f"{system_prompt.strip()}\n\n{rules}" if system_prompt.strip() else rules
    blocks = []
    for number, hit in enumerate(hits, start=1):
        entry = hit.entry
        source = f"\nSource: {entry.source}" if entry.source else ""
        blocks.append(f"[{number}] Q: {entry.question}\nA: {entry.answer}{source}")
    user = "FAQ entries:\n\n" + "\n\n".join(blocks) + f"\n\nCustomer question: {question}"
    return [ChatMessage("system", system), ChatMessage("user", user)]


_CITATION = re.compile(r"\[(\d{1,2})\]")


def check_grounded(output: str, question: str, hits: Sequence[Hit]) -> str:
    """Why a model answer may not be shown as the FAQ's ("" when it may)."""
    if not output:
        return "empty answer"
    if NO_ANSWER in output.upper().replace(" ", "_"):
        return "the model found no answer in the entries"
    cited = {int(n) for n in _CITATION.findall(output)}
    if not cited:
        return "no citation"
    if any(n < 1 or n > len(hits) for n in cited):
        return f"cites an entry that was not given: {sorted(cited)}"
    words = set(keyword_terms(_CITATION.sub(" ", output), limit=400))
    if not words:
        return "no content"
    support: set[str] = set(keyword_terms(question, limit=400))
    for n in cited:
        entry = hits[n - 1].entry
        support |= set(keyword_terms(f"{entry.question} {entry.answer} {entry.source}", limit=4000))
    covered = sum(1 for w in words if w in support or w[:5] in {s[:5] for s in support})
    if covered / len(words) < 0.6:
        return f"only {covered}/{len(words)} content words come from the cited entries"
    return ""


def _verbatim(entry: FaqEntry) -> str:
    source = entry.source or "FAQ"
    return f"{entry.answer}\n\nSource: {source} (FAQ {entry.ref})"


def _cite_list(hits: Sequence[Hit]) -> str:
    lines = ["Sources:"]
    for number, hit in enumerate(hits, start=1):
        entry = hit.entry
        extra = f", {entry.source}" if entry.source else ""
        lines.append(f"[{number}] {entry.question} (FAQ {entry.ref}{extra})")
    return "\n".join(lines)


def _suggestions(hits: Sequence[Hit]) -> str:
    lines = ["I couldn't find an exact answer. The closest FAQ entries are:"]
    lines += [f"- {h.entry.question} (FAQ {h.entry.ref})" for h in hits]
    return "\n".join(lines)


def _with_embedding(entry: FaqEntry, blob: bytes) -> FaqEntry:
    from dataclasses import replace

    return replace(entry, embedding=blob)
