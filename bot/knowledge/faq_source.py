"""The FAQ, approved learned answers included, as a knowledge source.

Its ranking is the retriever's hybrid search (dense + keyword, re-ranking of
close calls) and its scope score the retriever's background comparison;
this module only turns the retriever's hits into passages.
"""

from __future__ import annotations

from bot.knowledge.index import Hit
from bot.knowledge.passages import FAQ, Found, Passage
from bot.knowledge.retrieval import Retriever
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

    def __init__(self, retriever: Retriever) -> None:
        self.retriever = retriever

    async def lookup(self, question: str, *, tenant: str, limit: int) -> Found:
        found = await self.retriever.lookup(question, tenant=tenant, limit=limit)
        return Found(tuple(hit_passage(h) for h in found.hits), found.scope)

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
