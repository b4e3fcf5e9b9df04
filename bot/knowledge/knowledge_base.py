"""The knowledge base: its content, its per-scope settings, and the plan for a
message. It never calls the model to write an answer; the conversation
manager executes the plans it returns (``bot.plans``).

Answers come from knowledge sources (``bot.knowledge.passages``): the FAQ,
whose content this class also manages, and any source ``register``ed after
it. Their passages are merged into one ranking before the policy decides.

Every decision is logged with the passages it used and their scores
(``record``), which is where ``deskmate ask --json`` reads its path and
sources from.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np

from bot.knowledge import drafting
from bot.knowledge.documents.answer import extract, see_also
from bot.knowledge.faq_source import FaqSource
from bot.knowledge.importer import ParseResult, RowIssue, parse_file
from bot.knowledge.index import embed_entries
from bot.knowledge.passages import DOCUMENT, FAQ, Found, KnowledgeSource, Passage, merge
from bot.knowledge.policy import Decision, Policy, decide, grounded_prompt
from bot.knowledge.rerank import LikelihoodReranker
from bot.knowledge.retrieval import Retriever
from bot.language import detect_language
from bot.plans import (
    Chat,
    Clarify,
    Escalate,
    Grounded,
    KnowledgePlan,
    Plan,
    ReviseDraft,
    Verbatim,
    in_language,
)
from llm.embeddings import Embedder
from storage.knowledge_repo import (
    GLOBAL,
    EntryInput,
    FaqEntry,
    KnowledgeRepository,
    UpsertResult,
)

log = logging.getLogger(__name__)

Mode = Literal["support", "faq", "assistant"]
MODES: tuple[str, ...] = ("support", "faq", "assistant")
Progress = Callable[[int, int], None]
_P = TypeVar("_P", bound=Plan)
# How many passages a "did you mean ...?" offers at most.
CLARIFY_OPTIONS = 3
# How many more document passages a question's lookup ranks, so that a
# document quote can name other sections under it ("See also").
SEE_ALSO_MORE = 5


@dataclass(frozen=True, slots=True)
class Considered:
    """How a plain message would be answered: the passages retrieved (best
    first), the policy's decision on them (None when no source has any), the
    plan, and the mode it was planned under."""

    passages: tuple[Passage, ...]
    decision: Decision | None
    plan: KnowledgePlan | Chat
    mode: str


@dataclass(slots=True)
class ImportReport:
    path: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[RowIssue] = field(default_factory=list)
    language: str = ""  # what most rows are written in ("": not told)

    def lines(self) -> list[str]:
        written = f"; written in {self.language}" if self.language else ""
        out = [
            f"{self.path}: {self.created} added, {self.updated} updated, "
            f"{self.unchanged} unchanged, {len(self.skipped)} skipped{written}"
        ]
        out += [f"  skipped {issue}" for issue in self.skipped]
        return out


class KnowledgeBase:
    """Content of the FAQ tables, settings, and planning over every knowledge
    source; one per process."""

    def __init__(
        self,
        *,
        repository: KnowledgeRepository,
        embedder: Embedder,
        policy: Policy | None = None,
        refresh_interval: float = 2.0,
        model_store: Path | None = None,
        reranker: LikelihoodReranker | None = None,
        background: Sequence[str] | None = None,
        document_answers: str = "extractive",
        crosslingual: Embedder | None = None,
    ) -> None:
        """``background``: see ``Retriever``. ``crosslingual``: a multilingual
        model that answers every language pair but English to English
        (``FaqSource``), with its vectors kept beside the entries'. ``document_answers``: how a
        question a document answers is answered, ``extractive`` (the passage's
        own sentences, quoted) or ``model`` (written by the model from the
        passages, cited; the extractive quote when it fails the guard)."""
        self.repository = repository
        self.policy = policy or Policy()
        self.document_answers = document_answers
        self.retriever = Retriever(
            repository=repository,
            embedder=embedder,
            refresh_interval=refresh_interval,
            model_store=model_store,
            reranker=reranker,
            keyword_weight=self.policy.keyword_weight,
            background=background,
        )
        self.crosslingual = (
            Retriever(
                repository=repository,
                embedder=crosslingual,
                refresh_interval=refresh_interval,
                background=background,
                own_vectors=True,
            )
            if crosslingual is not None
            else None
        )
        self.faq = FaqSource(self.retriever, crosslingual=self.crosslingual, policy=self.policy)
        self._sources: list[KnowledgeSource] = [self.faq]

    def register(self, source: KnowledgeSource) -> None:
        """Answer from ``source`` too, ranked after the sources registered before
        it when scores tie; one source per kind."""
        if any(s.kind == source.kind for s in self._sources):
            raise ValueError(f"a {source.kind} source is registered already")
        self._sources.append(source)

    def source(self, kind: str) -> KnowledgeSource | None:
        """The registered source of ``kind``, if any."""
        return next((s for s in self._sources if s.kind == kind), None)

    # -- content -------------------------------------------------------------------

    async def import_file(
        self,
        path: Path,
        *,
        tenant: str = GLOBAL,
        fmt: str | None = None,
        mapping: dict[str, str] | None = None,
        progress: Progress | None = None,
        language: str = "",
    ) -> ImportReport:
        """Parse, embed and store a file in one transaction (all rows or none).

        Malformed rows are skipped and listed in the report; a fatal problem
        raises ``KnowledgeImportError`` before anything is stored. With
        ``language``, the rows are that language's version of the stored
        entries with the same ids (or questions), not entries of their own.
        """
        parsed = await asyncio.to_thread(parse_file, path, fmt=fmt, mapping=mapping)
        report = ImportReport(path=str(path), skipped=list(parsed.issues))
        report.language = await asyncio.to_thread(_file_language, parsed)
        if language:
            await self._store_versions(parsed, report, tenant, language, progress)
            return report
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
        embedder = await self.retriever.current_embedder()
        blobs = await asyncio.to_thread(_embed_with_progress, embedder, entries, progress)
        result = await self.repository.upsert_many(
            tenant, list(zip(entries, blobs, strict=True)), embedding_model=embedder.name
        )
        await self._changed(warm=True)
        return result

    async def _store_versions(
        self,
        parsed: ParseResult,
        report: ImportReport,
        tenant: str,
        language: str,
        progress: Progress | None,
    ) -> None:
        entries = [row.entry for row in parsed.rows]
        embedder = await self.retriever.current_embedder()
        blobs = await asyncio.to_thread(_embed_with_progress, embedder, entries, progress)
        stored = await self.repository.store_versions(
            tenant, language, list(zip(entries, blobs, strict=True)), embedding_model=embedder.name
        )
        await self._changed(warm=True)
        report.created, report.unchanged = stored.stored, stored.unchanged
        lines = {row.entry.key: row.line for row in parsed.rows}
        for key in stored.unknown:
            name = key.split(":", 1)[-1]
            reason = f"no entry {name!r} to add a {language} version to"
            values = {"name": name, "language": language}
            report.skipped.append(RowIssue(lines[key], reason, "no_entry", values))

    async def add(self, entry: EntryInput, *, tenant: str = GLOBAL) -> UpsertResult:
        embedder = await self.retriever.current_embedder()
        blob = await asyncio.to_thread(embed_entries, embedder, [entry])
        result = await self.repository.upsert_many(
            tenant, [(entry, blob[0])], embedding_model=embedder.name
        )
        await self._changed()
        return result

    async def remove(self, ref: str, *, tenant: str = GLOBAL) -> FaqEntry | None:
        removed = await self.repository.remove(tenant, ref)
        await self._changed()
        return removed

    async def _changed(self, *, warm: bool = False) -> None:
        """Rebuild the indexes on their next search; ``warm``: the multilingual one
        now, so that an import embeds and stores its vectors, not the first
        question in another language."""
        self.retriever.invalidate()
        if self.crosslingual is not None:
            self.crosslingual.invalidate()
            if warm:
                await self.crosslingual.refresh(force=True)

    async def fill_text_vectors(self) -> int:
        """Embed and store the multilingual model's vectors of the FAQ texts that
        ``faq_text_vectors`` lacks (an FAQ imported before it existed, or by a
        process without that model), so that no question in another language
        waits for them. Returns how many texts it embedded (0: none was missing,
        or no multilingual model)."""
        if self.crosslingual is None or not await self.repository.entries(limit=1):
            return 0
        before = self.crosslingual.texts_embedded
        await self.crosslingual.refresh()
        return self.crosslingual.texts_embedded - before

    # -- retrieval -----------------------------------------------------------------

    async def search(self, question: str, *, tenant: str = GLOBAL, limit: int = 5) -> list[Passage]:
        return list((await self.lookup(question, tenant=tenant, limit=limit)).passages)

    async def lookup(
        self,
        question: str,
        *,
        tenant: str = GLOBAL,
        limit: int = 5,
        agents: bool = False,
        more: int = 0,
    ) -> Found:
        """Every source's passages in one ranking, and the question's scope
        score; ``internal`` passages only for ``agents``; ``more``: up to that
        many passages of the other sources after the first ``limit`` (the FAQ's
        lookup, which may re-rank its candidates with the model, stays at
        ``limit``).

        A curated FAQ entry the policy would quote verbatim on its own comes
        first whatever other sources score: a matching entry wins.
        """
        if len(self._sources) == 1:
            return await self.faq.lookup(question, tenant=tenant, limit=limit)
        # Internal passages a customer may not see must not crowd out the rest.
        found = await asyncio.gather(
            *(
                s.lookup(
                    question, tenant=tenant, limit=limit if s is self.faq else limit + more + 5
                )
                for s in self._sources
            )
        )
        if not agents:
            found = [Found(tuple(p for p in f.passages if not p.internal), f.scope) for f in found]
        merged = merge(found, limit + more)
        faq = found[0]
        if faq.passages and decide(faq.passages, self.policy, faq.scope).path == "verbatim":
            rest = (p for p in merged.passages if p.kind != FAQ)
            return Found((*faq.passages, *rest)[: limit + more], merged.scope)
        return merged

    async def has_passages(self, tenant: str = GLOBAL) -> bool:
        """Whether any source has a passage ``tenant`` sees."""
        for source in self._sources:
            if await source.has_passages(tenant):
                return True
        return False

    async def decide(self, question: str, tenant: str = GLOBAL) -> Decision:
        """Choose verbatim / grounded / escalated for a question (no text is generated)."""
        found = await self.lookup(question, tenant=tenant, limit=self._decision_limit())
        return self.decide_hits(found.passages, found.scope)

    def decide_hits(self, hits: Sequence[Passage], scope: float | None = None) -> Decision:
        return decide(hits, self.policy, scope)

    def _decision_limit(self) -> int:
        """How many passages a decision looks at (and a clarification offers from)."""
        return max(self.policy.grounded_entries, CLARIFY_OPTIONS, 2)

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

    # -- planning ------------------------------------------------------------------

    async def plan(
        self,
        question: str,
        *,
        tenant: str,
        conversation_key: str,
        user: str = "",
        language: str = "",
    ) -> Plan:
        """What to do with a plain message.

        An open draft takes its author's message as a revision (anyone else in
        the conversation is answered as usual, and an expired draft is
        ignored); otherwise the mode
        decides: ``support`` and ``faq`` always answer from the knowledge base
        (``faq`` never lets the model write), ``assistant`` only when a passage
        is relevant. Where the tenant sees no passages, messages are plain chat
        (in ``faq`` mode: escalated, since the model may not write there).
        ``language``: the customer's (bot.language; "": not known), which the
        plan's fixed words and a grounded answer are written in; an entry quoted
        or offered is shown in its version in that language when it has one.
        """
        raw = await self.open_draft(conversation_key)
        persona = (await self.persona(tenant)).strip()
        if raw:
            opened = drafting.Draft.loads(raw)
            if opened.belongs_to(user) and not opened.expired(time.time()):
                draft = drafting.revise_options(opened, question)
                return ReviseDraft(draft, drafting.draft_messages(draft, persona, question))
        mode = await self.mode_for(conversation_key, tenant)
        number = question.strip().rstrip(".")
        if number in ("1", "2", "3") and mode != "assistant":
            chosen = await self._numbered_choice(int(number), conversation_key)
            if chosen is not None:
                picked = await self.choose(
                    chosen, tenant=tenant, conversation_key=conversation_key, user=user
                )
                if picked is not None:
                    return picked
        considered = await self._consider(
            question, tenant, mode, persona, shown=0, language=language
        )
        return self.in_versions(considered.plan, language)

    async def consider(
        self,
        question: str,
        *,
        tenant: str,
        conversation_key: str,
        shown: int = 5,
        language: str = "",
    ) -> Considered:
        """The plan ``plan`` would make for a plain message (open drafts and
        numbered choices aside), with the ``shown`` best passages it saw."""
        mode = await self.mode_for(conversation_key, tenant)
        persona = (await self.persona(tenant)).strip()
        considered = await self._consider(
            question, tenant, mode, persona, shown=shown, language=language
        )
        return replace(considered, plan=self.in_versions(considered.plan, language))

    def in_versions(self, plan: _P, language: str) -> _P:
        """``plan`` with the FAQ entries it quotes or offers in their ``language``
        version, where they have one (the same plan otherwise)."""
        if not language:
            return plan
        if isinstance(plan, Verbatim):
            return replace(plan, passage=self._version_of(plan.passage, language))
        if isinstance(plan, Clarify):
            return replace(plan, options=tuple(self._version_of(p, language) for p in plan.options))
        return plan

    def _version_of(self, passage: Passage, language: str) -> Passage:
        if passage.kind != FAQ or passage.entry_id is None or passage.language == language:
            return passage
        version = self.retriever.version(passage.entry_id, language)
        if version is None:
            return passage
        return replace(
            passage,
            title=version.question,
            question=version.question,
            text=version.answer,
            language=language,
        )

    async def _consider(
        self, question: str, tenant: str, mode: str, persona: str, *, shown: int, language: str
    ) -> Considered:
        if not await self.has_passages(tenant):
            if mode == "faq":
                empty = Escalate("faq mode, the knowledge base is empty", (), None)
                return Considered((), None, empty, mode)
            return Considered((), None, Chat(persona), mode)
        limit = self._decision_limit()
        wanted = max(limit, shown)
        every = await self.lookup(
            question, tenant=tenant, limit=wanted, agents=True, more=SEE_ALSO_MORE
        )
        public = tuple(p for p in every.passages if not p.internal)
        # Each source ranks its first ``limit`` passages the same however many
        # more are asked for, so the decision is the one ``decide`` makes.
        decision = self.decide_hits(public[:limit], every.scope)
        plan = _with_see_also(self.plan_for(question, decision, mode, persona, language), public)
        if isinstance(plan, Escalate) and len(public) < len(every.passages):
            # The agents who take the question over see internal passages too.
            plan = dataclasses.replace(plan, candidates=every.passages[:limit])
        return Considered(public[:shown], decision, plan, mode)

    def plan_for(
        self, question: str, decision: Decision, mode: str, persona: str = "", language: str = ""
    ) -> KnowledgePlan | Chat:
        """The plan for a decision under ``mode`` (pure: no I/O)."""
        plan = self._plan_for(question, decision, mode, persona, language)
        return in_language(plan, language) if language else plan

    def _plan_for(
        self, question: str, decision: Decision, mode: str, persona: str, language: str
    ) -> KnowledgePlan | Chat:
        if decision.path != "escalated" and decision.hits and decision.hits[0].kind == DOCUMENT:
            return self._document_plan(question, decision, mode, persona, language)
        if decision.path == "verbatim":
            return Verbatim(decision.hits[0], decision, decision.reason)
        if decision.path == "escalated":
            if mode == "assistant":
                return Chat(persona)
            return Escalate(decision.reason, decision.hits, decision)
        if self.policy.clarify and mode in ("support", "faq") and decision.hits:
            # Between the thresholds the right passage is usually among the first
            # three (bench/README.md), while the first alone is too often wrong
            # to quote; the customer picks, and the pick is answered verbatim.
            return Clarify(decision.hits[:CLARIFY_OPTIONS], decision)
        if mode == "faq":
            return Escalate.with_suggestions(f"faq mode, {decision.reason}", decision)
        best = decision.hits[0]
        fallback: Verbatim | Escalate
        if best.dense >= self.policy.fallback_verbatim_score:
            fallback = Verbatim(best, decision, "model answer failed the guard")
        else:
            fallback = Escalate("model answer failed the guard", decision.hits, decision)
        return Grounded(
            question=question,
            messages=grounded_prompt(question, decision.hits, persona, language),
            decision=decision,
            fallback=fallback,
            max_new_tokens=self.policy.max_grounded_tokens,
        )

    def _document_plan(
        self, question: str, decision: Decision, mode: str, persona: str, language: str
    ) -> Verbatim | Grounded:
        """A question the best passage of a document answers: its sentences
        quoted and cited, or (``document_answers == "model"``, not in ``faq``
        mode) the model's answer from the passages, with the quote as fallback."""
        quote = Verbatim(extract(decision.hits[0], question), decision, "document passage quoted")
        if self.document_answers != "model" or mode == "faq":
            return quote
        return Grounded(
            question=question,
            messages=grounded_prompt(question, decision.hits, persona, language),
            decision=decision,
            fallback=quote,
            max_new_tokens=self.policy.max_grounded_tokens,
        )

    async def _numbered_choice(self, number: int, conversation_key: str) -> str | None:
        """The passage a reply "1".."3" picks, when the last answer here offered options."""
        last = await self.repository.answers(conversation_key=conversation_key, limit=1)
        if not last or last[0]["path"] != "clarify":
            return None
        options = last[0]["entries"]
        return str(options[number - 1]["ref"]) if number <= len(options) else None

    async def choose(
        self, ref: str, *, tenant: str, conversation_key: str, user: str = ""
    ) -> Verbatim | None:
        """Answer the passage a customer chose (``Passage.ref``) verbatim, and
        learn their wording when it is an FAQ entry.

        When the conversation's last answer offered the entry as an option, the
        question that was asked becomes a phrasing of the entry for ``tenant``:
        asked again, it is answered directly.
        """
        passage = await self.passage(ref, tenant=tenant)
        if passage is None or passage.internal:
            return None
        last = await self.repository.answers(conversation_key=conversation_key, limit=1)
        offered = (
            last
            and last[0]["path"] == "clarify"
            and any(str(o.get("ref")) == passage.ref for o in last[0]["entries"])
        )
        if offered and passage.kind == self.faq.kind:
            entry = await self.faq.entry(passage.id, tenant=tenant)
            if entry is not None:
                await self.learn_phrasing(entry, last[0]["question"], tenant=tenant, user=user)
        # The customer's choice is certain, whatever the source would score it.
        passage = dataclasses.replace(passage, score=1.0, dense=1.0, keyword=0.0)
        decision = Decision("verbatim", (passage,), 1.0, 1.0, "chosen by the customer")
        return Verbatim(passage, decision, "chosen by the customer")

    async def passage(self, ref: str, *, tenant: str) -> Passage | None:
        """The passage named ``ref`` (``Passage.ref``: an FAQ entry's id, else
        ``kind:id``) that ``tenant`` sees."""
        kind, colon, rest = ref.partition(":")
        for source in self._sources[1:]:
            if colon and source.kind == kind:
                found = await source.passage(rest, tenant=tenant)
                if found is not None:
                    return found
        return await self.faq.passage(ref, tenant=tenant)

    async def learn_phrasing(
        self, entry: FaqEntry, text: str, *, tenant: str, user: str = ""
    ) -> bool:
        """Store ``text`` as another phrasing of ``entry``, seen by ``tenant`` only."""
        text = " ".join(text.split())
        if not text or text.startswith("/") or text.casefold() == entry.question.casefold():
            return False
        embedder = await self.retriever.current_embedder()
        vector = await asyncio.to_thread(embedder.embed, [text])
        added = await self.repository.add_phrasing(
            tenant=tenant,
            entry_id=entry.id,
            text=text,
            user_id=user,
            embedding=np.ascontiguousarray(vector[0], dtype="<f4").tobytes(),
            embedding_model=embedder.name,
        )
        await self._changed()
        return added

    async def record(
        self,
        plan: Verbatim | Escalate | Clarify | Grounded,
        *,
        question: str,
        answer: str,
        tenant: str,
        conversation_key: str,
        user_id: str,
    ) -> tuple[int, int | None]:
        """Log how a question was answered (an escalation also opens one)."""
        decision = plan.decision
        considered = decision.hits if decision is not None else ()
        if isinstance(plan, Escalate):
            considered = plan.candidates or considered
        elif isinstance(plan, Clarify):
            considered = plan.options
        elif isinstance(plan, Verbatim) and plan.passage.kind == DOCUMENT:
            # The sources the customer was shown: the quoted one, then "See also".
            considered = (*considered[:1], *plan.see_also)
        logged = [p.logged() for p in considered]
        return await self.repository.record_answer(
            tenant=tenant,
            conversation_key=conversation_key,
            question=question,
            path=plan.path,
            entries=logged,
            answer=answer,
            escalate_reason=plan.reason if isinstance(plan, Escalate) else None,
            user_id=user_id,
        )


def _with_see_also(plan: KnowledgePlan | Chat, ranked: Sequence[Passage]) -> KnowledgePlan | Chat:
    """A document quote (or a model answer's quote fallback) with the next
    sections of ``ranked`` named under it."""
    if isinstance(plan, Grounded) and isinstance(plan.fallback, Verbatim):
        quote = plan.fallback
        if quote.passage.kind == DOCUMENT:
            return replace(plan, fallback=replace(quote, see_also=see_also(quote.passage, ranked)))
    if isinstance(plan, Verbatim) and plan.passage.kind == DOCUMENT:
        return replace(plan, see_also=see_also(plan.passage, ranked))
    return plan


def _file_language(parsed: ParseResult) -> str:
    """The language most rows are written in (bot.language; "" when none is told)."""
    counts = Counter(detect_language(f"{r.entry.question} {r.entry.answer}") for r in parsed.rows)
    counts.pop(None, None)
    return str(counts.most_common(1)[0][0]) if counts else ""


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
