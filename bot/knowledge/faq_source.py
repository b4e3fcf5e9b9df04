"""The FAQ, approved learned answers included, as a knowledge source.

Its ranking is the retriever's hybrid search (dense + keyword, re-ranking of
close calls) and its scope score the retriever's background comparison.

With a second, multilingual retriever beside the deployment's (the default,
``DESKMATE_EMBEDDING_MODEL=auto``), each question goes to one of them: an
English question about English entries to the deployment's model (adapted by
``faq tune``, re-ranked), every other language pair to the multilingual one,
whose scores are shifted by the pair's own thresholds (``policy.pair_scale``)
onto the policy's, so that one policy decides for both.
"""

from __future__ import annotations

from dataclasses import replace

from bot.knowledge.index import Hit
from bot.knowledge.passages import FAQ, Found, Passage
from bot.knowledge.policy import PairScale, Policy, pair_scale
from bot.knowledge.retrieval import Lookup, Retriever
from bot.language import detect_language
from storage.knowledge_repo import GLOBAL, FaqEntry


def entry_passage(entry: FaqEntry, score: float, dense: float, keyword: float) -> Passage:
    """An FAQ entry as a passage: its question is the title, its answer the text."""
    return Passage(
        kind=FAQ,
        id=entry.ref,
        title=entry.question,
        text=entry.answer,
        score=score,
        dense=dense,
        keyword=keyword,
        tenant=entry.tenant,
        origin=entry.source,
        question=entry.question,
        entry_id=entry.id,
    )


def hit_passage(hit: Hit) -> Passage:
    return entry_passage(hit.entry, hit.score, hit.dense, hit.keyword)


class FaqSource:
    """The FAQ tables behind ``retriever``; passages are named by entry ref."""

    kind = FAQ

    def __init__(
        self,
        retriever: Retriever,
        *,
        crosslingual: Retriever | None = None,
        policy: Policy | None = None,
    ) -> None:
        """``crosslingual``: the multilingual retriever for every language pair but
        English to English; ``policy``: the thresholds its scores are shifted onto."""
        self.retriever = retriever
        self.crosslingual = crosslingual
        self.policy = policy or Policy()

    async def lookup(self, question: str, *, tenant: str, limit: int) -> Found:
        pair = await self.pair(question, tenant)
        if pair is None or self.crosslingual is None:
            found = await self.retriever.lookup(question, tenant=tenant, limit=limit)
            return Found(tuple(hit_passage(h) for h in found.hits), found.scope)
        scale = pair_scale(*pair)
        found = await self.crosslingual.lookup(
            question,
            tenant=tenant,
            limit=limit,
            keyword_weight=scale.keyword_weight,
            qa_weight=scale.qa_weight,
        )
        return self._shifted(found, scale)

    async def pair(self, question: str, tenant: str) -> tuple[str, str] | None:
        """(question's language, entries' language) when the multilingual retriever
        answers ``question``; None when the deployment's model does."""
        if self.crosslingual is None:
            return None
        await self.retriever.refresh()
        main, versions = self.retriever.languages(tenant)
        # A message too short to tell is taken to be in the FAQ's language.
        asked = detect_language(question) or main or "en"
        entries = asked if asked in versions or not main else main
        if asked == "en" and entries == "en":
            return None
        return asked, entries

    def _shifted(self, found: Lookup, scale: PairScale) -> Found:
        dense = self.policy.verbatim_score - scale.verbatim_score
        scope = self.policy.grounded_score - scale.grounded_score
        passages = tuple(
            replace(hit_passage(h), score=h.score + dense, dense=h.dense + dense)
            for h in found.hits
        )
        return Found(passages, found.scope + scope)

    async def passage(self, id: str, *, tenant: str) -> Passage | None:
        """The entry ``id`` (its ref) as a passage that is sure of itself."""
        entry = await self.entry(id, tenant=tenant)
        return entry_passage(entry, 1.0, 1.0, 0.0) if entry is not None else None

    async def entry(self, ref: str, *, tenant: str) -> FaqEntry | None:
        """The entry ``ref`` that ``tenant`` sees: its own first, then the shared one."""
        repository = self.retriever.repository
        for scope in dict.fromkeys((tenant, GLOBAL)):
            for entry in await repository.entries(tenant=scope):
                if entry.ref == ref:
                    return entry
        return None

    async def has_passages(self, tenant: str) -> bool:
        return await self.retriever.has_entries(tenant)
