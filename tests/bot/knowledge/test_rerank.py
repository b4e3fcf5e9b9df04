"""Re-ranking close calls with a scorer: when it runs, what it changes, how it fails.

The scorer here is scripted; the real model's scores are checked in
tests/llm/test_transformers_backend.py and its effect on retrieval quality in
test_retrieval_quality.py.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.app import create_knowledge_base as knowledge_base
from bot.knowledge.index import Hit
from bot.knowledge.rerank import LikelihoodReranker
from bot.settings import Settings
from llm.fake import FakeBackend
from storage.db import Database
from storage.knowledge_repo import FaqEntry


def _hit(n: int, score: float, question: str) -> Hit:
    entry = FaqEntry(
        id=n,
        tenant="",
        key=f"k{n}",
        external_id=f"e{n}",
        question=question,
        answer=f"Answer {n}.",
        alternatives=(),
        tags=(),
        source="",
        updated_at=datetime.now(UTC),
    )
    return Hit(entry, score, score, 0.0)


class Scripted:
    """Scores a pair by the words its continuation shares with its context."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[list[tuple[str, str]]] = []

    async def loglikelihoods(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        self.calls.append(list(pairs))
        if self.fail:
            raise RuntimeError("model gone")
        return [float(len(_words_of(c) & _words_of(t))) for c, t in pairs]

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def _words_of(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


HITS = [
    _hit(1, 0.70, "Do I need a permit for a deck?"),
    _hit(2, 0.69, "Do I need a permit for a fence?"),
    _hit(3, 0.60, "How much does a fence cost?"),
    _hit(4, 0.50, "What is a deck?"),
]


async def test_a_close_call_is_reordered_by_the_scores() -> None:
    scorer = Scripted()
    reranker = LikelihoodReranker(scorer)
    ranked = await reranker.rerank("permit for my new fence", HITS)
    assert [h.entry.id for h in ranked] == [2, 1, 3, 4]
    # Three pairs for each of the three candidates, then one prior per entry question.
    assert len(scorer.calls[0]) == 3 * 3 + 3
    # The best keeps its score; the others lose in proportion to their evidence gap.
    assert ranked[0].score == pytest.approx(0.69)
    assert ranked[1].score < 0.70
    assert ranked[3] is HITS[3]  # beyond the candidates: untouched
    assert all(h.dense == h.score for h in HITS)  # confidence is not rewritten
    assert [h.dense for h in ranked[:3]] == [0.69, 0.70, 0.60]
    assert reranker.reranked == 1


async def test_a_clear_winner_costs_no_model_call() -> None:
    scorer = Scripted()
    reranker = LikelihoodReranker(scorer)
    clear = [_hit(1, 0.80, "a"), _hit(2, 0.70, "b")]
    assert await reranker.rerank("question", clear) == clear
    assert await reranker.rerank("question", clear[:1]) == clear[:1]
    assert scorer.calls == [] and reranker.reranked == 0


async def test_priors_are_computed_once_per_entry_question() -> None:
    scorer = Scripted()
    reranker = LikelihoodReranker(scorer)
    await reranker.rerank("permit for my new fence", HITS)
    await reranker.rerank("deck permit", HITS)
    assert len(scorer.calls[1]) == 3 * 3  # no priors the second time


async def test_a_failing_model_leaves_the_ranking_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reranker = LikelihoodReranker(Scripted(fail=True))
    with caplog.at_level(logging.WARNING):
        assert await reranker.rerank("permit for my new fence", HITS) == HITS
        assert await reranker.rerank("permit for my new fence", HITS) == HITS
    assert [r.getMessage() for r in caplog.records].count(
        "re-ranking with the local model failed (model gone); ranking without it"
    ) == 1


class ScoringFake(FakeBackend):
    async def loglikelihoods(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return [0.0] * len(pairs)


def test_only_a_backend_that_can_score_gets_a_reranker(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'kb.db'}")
    settings = Settings(data_dir=tmp_path)
    assert knowledge_base(db, settings, ScoringFake()).retriever.reranker is not None
    assert knowledge_base(db, settings, FakeBackend()).retriever.reranker is None
    assert knowledge_base(db, settings, None).retriever.reranker is None
    off = Settings(data_dir=tmp_path, faq_rerank=False)
    assert knowledge_base(db, off, ScoringFake()).retriever.reranker is None
