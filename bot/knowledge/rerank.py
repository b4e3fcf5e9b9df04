"""Re-ranking close knowledge-base candidates with the local language model.

Near-duplicate entries ("Do I need a permit for a deck / a fence / a pool?")
sit within a few hundredths of each other in embedding space, and which one a
reworded question lands on is close to chance. The language model reads the
words: for each of the top candidates it scores how likely the customer's
question is as a rewording of the entry (given the entry's question and
answer, and given its question alone), and how much more likely the entry's
question becomes once the customer's question has been read (pointwise mutual
information, so that short or common questions gain nothing by being short or
common). The sum, per token of the customer's question, nudges the retrieval
score; it re-orders close candidates and never invents one.

Only questions whose best two candidates are close are re-ranked: a clear
winner is answered without a model call. bench/README.md has the figures that
set ``WEIGHT``, ``MARGIN`` and ``CANDIDATES``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from bot.knowledge.index import Hit
from llm.base import Scorer

log = logging.getLogger(__name__)

WEIGHT = 0.1  # retrieval-score units per nat per token of the question
MARGIN = 0.05  # re-rank only when the runner-up is closer than this
CANDIDATES = 3
# Long answers add cost, not signal: their opening says what they are about.
_ANSWER_CHARS = 1000
# A customer's message can be a page long; the model reads its opening only.
_QUESTION_CHARS = 500
_PRIOR_CACHE = 20_000


def _as_rewording_of_entry(question: str, answer: str) -> str:
    return (
        f"Question: {question}\nAnswer: {answer[:_ANSWER_CHARS]}\n\n"
        "A customer asked the same question like this: "
    )


def _as_rewording_of_question(question: str) -> str:
    return f"FAQ question: {question}\nThe same question in a customer's words: "


def _entry_question_after(customer: str) -> str:
    return f"A customer wrote: {customer}\nThe matching question in our FAQ: "


class LikelihoodReranker:
    """Re-orders the top hits of a close call by the model's likelihoods."""

    def __init__(
        self,
        scorer: Scorer,
        *,
        weight: float = WEIGHT,
        margin: float = MARGIN,
        candidates: int = CANDIDATES,
    ) -> None:
        self.scorer = scorer
        self.weight = weight
        self.margin = margin
        self.candidates = candidates
        # log P(entry question | no customer question), per entry question: it
        # depends on the entry alone, so it is computed once.
        self._priors: dict[str, float] = {}
        self._failed = False
        self.reranked = 0  # questions re-ranked so far, for benchmarks and logs

    def wants(self, hits: Sequence[Hit]) -> bool:
        return len(hits) >= 2 and hits[0].score - hits[1].score < self.margin

    async def rerank(self, question: str, hits: Sequence[Hit]) -> list[Hit]:
        """``hits`` with the first ``candidates`` re-scored and re-sorted when
        the call is close; unchanged otherwise, or when the model fails."""
        if not self.wants(hits):
            return list(hits)
        head, tail = list(hits[: self.candidates]), list(hits[self.candidates :])
        question = question[:_QUESTION_CHARS]
        if len(self._priors) > _PRIOR_CACHE:
            self._priors.clear()
        missing = sorted({h.entry.question for h in head} - self._priors.keys())
        pairs: list[tuple[str, str]] = []
        for hit in head:
            entry = hit.entry
            pairs.append((_as_rewording_of_entry(entry.question, entry.answer), question))
            pairs.append((_as_rewording_of_question(entry.question), question))
            pairs.append((_entry_question_after(question), entry.question))
        pairs.extend((_entry_question_after(""), q) for q in missing)
        try:
            scores = await self.scorer.loglikelihoods(pairs)
        except Exception as exc:  # retrieval must not fail because the model did
            if not self._failed:
                self._failed = True
                log.warning("re-ranking with the local model failed (%s); ranking without it", exc)
            return list(hits)
        self._failed = False
        self.reranked += 1
        self._priors.update(zip(missing, scores[3 * len(head) :], strict=True))
        tokens = max(1, self.scorer.count_tokens(question))
        evidence = [
            (
                (scores[3 * i] + scores[3 * i + 1]) / 2
                + scores[3 * i + 2]
                - self._priors[hit.entry.question]
            )
            / tokens
            for i, hit in enumerate(head)
        ]
        best = max(evidence)
        rescored = [
            dataclasses.replace(hit, score=hit.score + self.weight * (value - best))
            for hit, value in zip(head, evidence, strict=True)
        ]
        rescored.sort(key=lambda h: h.score, reverse=True)
        return rescored + tail
