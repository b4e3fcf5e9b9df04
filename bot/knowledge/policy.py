"""The answering policy: which path a question takes, and what a model answer
must satisfy to be shown as the knowledge base's.

It works on passages (``bot.knowledge.passages``) from any source.
Thresholds are on the dense (cosine-scale) confidence of the best passage, and
on the question's scope score (``bot.knowledge.retrieval``):

- ``escalated``: the scope score is under ``grounded_score`` -> nothing
  relevant: say so, offer a human, record it.
- ``verbatim``: a confident match (score and lead over the runner-up) -> its
  text word for word, with its source. No model.
- ``grounded``: a plausible match -> the model answers from the top passages
  only and must cite them. ``GroundedGate`` shows the answer as it streams,
  but only the part that passes ``check_grounded``; when nothing does, the
  best passage is shown verbatim if it is still likely enough, else escalated.
  (In ``support`` and ``faq`` modes the customer is asked "did you mean ...?"
  instead.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bot.knowledge.documents import answer as documents
from bot.knowledge.passages import DOCUMENT, Passage, kind_name
from bot.language import answer_language_rule
from bot.messages import say
from llm.base import ChatMessage
from llm.embeddings import MULTILINGUAL_MODEL_NAME
from storage.keywords import keyword_terms

NO_ANSWER = "NO_ANSWER"
HUMAN_COMMAND = "/human"


@dataclass(frozen=True, slots=True)
class ScoreScale:
    """Where one embedding model's cosines put the policy's thresholds. Models
    spread cosines differently: multilingual-e5 gives unrelated texts 0.7-0.8,
    all-MiniLM-L6-v2 about 0-0.2, so each model has its own (bench/README.md)."""

    verbatim_score: float = 0.65
    grounded_score: float = 0.0  # on the scope score
    # After a model answer fails the guard; for all-MiniLM-L6-v2 halfway between the two.
    fallback_verbatim_score: float = 0.325
    # A background question at least this close to an entry is within the
    # knowledge base's domain (bot.knowledge.retrieval).
    background_in_domain: float = 0.65
    # The scope score's penalty for the share of the question's words no entry
    # uses (bot.knowledge.retrieval.COVERAGE_WEIGHT). A question in another
    # language than the FAQ's uses none of its words, so a model that matches
    # across languages does without it.
    coverage_weight: float = 0.1
    # The question + answer vector's weight against the best phrasing's
    # (bot.knowledge.index).
    qa_weight: float = 1.0


# Chosen on all tuning halves of bench/faq_languages.py together (bench/README.md,
# "Languages"): no verbatim threshold kept 97 % of verbatim answers right (only an
# exact match is quoted without asking), and 95 % of the off-topic questions fall
# under a scope of 0.04. The other two are not measured yet.
MULTILINGUAL_SCALE = ScoreScale(
    verbatim_score=1.0,
    grounded_score=0.04,
    fallback_verbatim_score=0.9,
    background_in_domain=0.9,
    coverage_weight=0.0,
    qa_weight=4.0,
)
SCALES: dict[str, ScoreScale] = {MULTILINGUAL_MODEL_NAME: MULTILINGUAL_SCALE}


@dataclass(frozen=True, slots=True)
class PairScale:
    """The multilingual model's thresholds for one language pair: the question's
    language and the language of the entries it is matched with. A question in
    the entries' own language scores higher against everything, off-topic
    questions included, than one asked across languages, so one threshold cannot
    serve both (bench/README.md, "Languages"). Scores of the multilingual model
    are shifted so that these thresholds fall on the policy's own."""

    verbatim_score: float
    grounded_score: float  # on the scope score
    # The keyword half matches words, which a question in another language shares
    # with no entry: across languages it only adds noise.
    keyword_weight: float = 0.02
    # The question + answer vector's weight against the best phrasing's.
    qa_weight: float = 4.0


# Chosen per pair on the tuning halves of bench/faq_languages.py (bench/README.md):
# no verbatim threshold is trusted (only an exact match is quoted without asking;
# below it the customer picks among the options, which loses no right answer);
# scope for 95 % of the off-topic questions escalated; across languages, the
# question + answer weight that put the right entry among the first three most
# often (within a language the tuning half's choice did not hold on the held-out
# half, and the English model's weight stays). "same" and "cross" serve the pairs
# not measured: the Swedish and the Chinese-to-English figures.
MULTILINGUAL_PAIRS: dict[str, PairScale] = {
    "same": PairScale(verbatim_score=1.0, grounded_score=0.04, qa_weight=1.0),
    "cross": PairScale(verbatim_score=1.0, grounded_score=0.0, keyword_weight=0.0),
    "en-sv": PairScale(verbatim_score=1.0, grounded_score=-0.04, keyword_weight=0.0),
}


def pair_scale(question: str, entries: str) -> PairScale:
    """The thresholds for a question in ``question``'s language matched with entries
    written in ``entries``' (ISO 639-1 codes)."""
    measured = MULTILINGUAL_PAIRS.get(f"{question}-{entries}")
    if measured is not None:
        return measured
    return MULTILINGUAL_PAIRS["same" if question == entries else "cross"]


def scale_of(model_name: str) -> ScoreScale:
    """The thresholds for the model of that name (the English model's by default)."""
    return SCALES.get(model_name, ScoreScale())


@dataclass(frozen=True, slots=True)
class Policy:
    """Score thresholds on the dense (cosine-scale) confidence of the best entry."""

    # Chosen on the tuning half of tests/data/faq (bench/README.md):
    # verbatim_score for DESKMATE_FAQ_PRECISION's default of 97 % right
    # verbatim answers; grounded_score, on the scope score, in the gap between
    # every off-topic question (all under -0.06) and every in-scope one (all
    # above 0.06).
    verbatim_score: float = 0.65
    verbatim_margin: float = 0.02
    grounded_score: float = 0.0
    # After a model answer fails the guard, the best entry is still shown
    # verbatim when at least this likely; otherwise the question is escalated.
    fallback_verbatim_score: float = 0.55
    # See bot.knowledge.retrieval.KEYWORD_WEIGHT.
    keyword_weight: float = 0.02
    grounded_entries: int = 3
    max_grounded_tokens: int = 220
    # Between the thresholds, support and faq modes ask "did you mean ...?"
    # instead of letting the model answer (False: the model answers, grounded).
    clarify: bool = True

    @classmethod
    def for_model(cls, model_name: str, **overrides: object) -> Policy:
        """The default thresholds for that embedding model's scores."""
        scale = scale_of(model_name)
        values: dict[str, object] = {
            "verbatim_score": scale.verbatim_score,
            "grounded_score": scale.grounded_score,
            "fallback_verbatim_score": scale.fallback_verbatim_score,
        }
        return cls(**{**values, **overrides})  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy chose for one question, before any model call."""

    path: Literal["verbatim", "grounded", "escalated"]
    hits: tuple[Passage, ...]  # best first; the passages the answer may use
    confidence: float  # dense score of the best passage (0 when none)
    margin: float  # its lead over the runner-up
    reason: str
    scope: float = 0.0  # how likely the question is about the knowledge base at all

    @property
    def scores(self) -> list[float]:
        return [h.dense for h in self.hits]


def decide(hits: Sequence[Passage], policy: Policy, scope: float | None = None) -> Decision:
    """The policy applied to retrieved hits (best first) and the question's
    scope score (the best passage's confidence when not given)."""
    if not hits:
        return Decision("escalated", (), 0.0, 0.0, "the knowledge base is empty")
    best = hits[0]
    runner_up = hits[1].score if len(hits) > 1 else -1.0
    margin = best.score - runner_up
    confidence = best.dense
    scope = confidence if scope is None else scope
    if scope < policy.grounded_score:
        return Decision(
            "escalated", tuple(hits[:1]), confidence, margin, "no entry is close enough", scope
        )
    if confidence >= policy.verbatim_score and margin >= policy.verbatim_margin:
        return Decision("verbatim", (best,), confidence, margin, "confident match", scope)
    reason = "close runner-up" if confidence >= policy.verbatim_score else "partial match"
    rest = hits[1 : policy.grounded_entries]
    top = (best, *(h for h in rest if h.dense >= policy.grounded_score))
    return Decision("grounded", top, confidence, margin, reason, scope)


def grounded_prompt(
    question: str, hits: Sequence[Passage], system_prompt: str = "", language: str = ""
) -> list[ChatMessage]:
    """Messages asking the model to answer only from ``hits``, citing ``[n]``,
    in ``language`` (the customer's; "": the question's own).

    A passage that answers a stated question (an FAQ entry) is given as that
    question and its answer; any other as its title and text."""
    rules = (
        "Answer the customer's question using ONLY the numbered FAQ entries given. "
        "Cite every entry you use as [1], [2], ... right after the sentence it supports. "
        "Do not add facts, prices, deadlines or policies that are not in the entries. "
        f"If the entries do not answer the question, reply with exactly {NO_ANSWER}."
    )
    if any(h.kind == DOCUMENT for h in hits):
        rules = rules.replace("FAQ entries", "passages").replace("entries", "passages")
    if language:
        rules += " " + answer_language_rule(language)
    system = f"{system_prompt.strip()}\n\n{rules}" if system_prompt.strip() else rules
    blocks = []
    for number, hit in enumerate(hits, start=1):
        source = f"\nSource: {hit.origin}" if hit.origin else ""
        if hit.question:
            blocks.append(f"[{number}] Q: {hit.question}\nA: {hit.text}{source}")
        elif hit.section:
            blocks.append(f"[{number}] {hit.title} › {hit.section}\n{hit.text}")
        else:
            blocks.append(f"[{number}] {hit.title}\n{hit.text}{source}")
    heading = "Passages" if any(h.kind == DOCUMENT for h in hits) else "FAQ entries"
    user = f"{heading}:\n\n" + "\n\n".join(blocks) + f"\n\nCustomer question: {question}"
    return [ChatMessage("system", system), ChatMessage("user", user)]


_CITATION = re.compile(r"\[(\d{1,2})\]")


def check_grounded(output: str, question: str, hits: Sequence[Passage]) -> str:
    """Why a model answer may not be shown as the knowledge base's ("" when it may)."""
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
        cited_passage = hits[n - 1]
        text = f"{cited_passage.title} {cited_passage.text} {cited_passage.origin}"
        support |= set(keyword_terms(text, limit=4000))
    covered = sum(1 for w in words if w in support or w[:5] in {s[:5] for s in support})
    if covered / len(words) < 0.6:
        return f"only {covered}/{len(words)} content words come from the cited entries"
    return ""


# Where a shown prefix may end: after a sentence's punctuation or a citation.
_BOUNDARY = re.compile(r"(?<=[.!?\]:;])\s+")


class GroundedGate:
    """Lets a grounded answer stream while showing only text that passes the guard.

    ``feed`` takes the model's text as it arrives and returns what may be shown
    now: the answer up to its latest sentence boundary, once that whole prefix
    passes ``check_grounded``. ``finish`` returns the rest when the whole answer
    passes. What was shown therefore always passes the guard; a tail that
    strays from the entries is dropped, and an answer with no passing prefix
    shows nothing (the caller falls back).
    """

    def __init__(self, question: str, hits: Sequence[Passage]) -> None:
        self.question = question
        self.hits = tuple(hits)
        self._text = ""
        self._shown = 0
        self.verdict = "empty answer"

    @property
    def shown(self) -> str:
        return self._text[: self._shown]

    def feed(self, delta: str) -> str:
        self._text += delta
        ends = [m.start() for m in _BOUNDARY.finditer(self._text, self._shown)]
        for end in reversed(ends):
            if end <= self._shown:
                break
            if not check_grounded(self._text[:end].strip(), self.question, self.hits):
                return self._show(end)
        return ""

    def finish(self) -> str:
        self.verdict = check_grounded(self._text.strip(), self.question, self.hits)
        if not self.verdict:
            return self._show(len(self._text.rstrip()))
        if self._shown:
            self.verdict = ""  # a prefix passed; the straying tail is dropped
        return ""

    def _show(self, end: int) -> str:
        piece = self._text[self._shown : end]
        if not self._shown:
            piece = piece.lstrip()
        self._shown = end
        return piece


def verbatim_text(passage: Passage, language: str = "en", see_also: Sequence[Passage] = ()) -> str:
    """A passage quoted word for word, with where it comes from (and, for a
    document's, ``see_also``: other sections listed apart)."""
    if passage.kind == DOCUMENT:
        return documents.quoted(passage, language, see_also)
    return say(
        "knowledge.verbatim",
        language,
        text=passage.text,
        source=passage.origin or kind_name(passage.kind),
        label=passage.label,
    )


def cite_list(hits: Sequence[Passage], language: str = "en") -> str:
    """The numbered sources under a grounded answer (``[n]`` as the model cites them)."""
    lines = [say("knowledge.sources", language)]
    for number, hit in enumerate(hits, start=1):
        values = {"number": number, "title": hit.title, "label": hit.label}
        if hit.kind == DOCUMENT:
            lines.append(documents.source_line(number, hit, language))
        elif hit.origin:
            lines.append(
                say("knowledge.source_line_with_origin", language, origin=hit.origin, **values)
            )
        else:
            lines.append(say("knowledge.source_line", language, **values))
    return "\n".join(lines)


def suggestions_text(hits: Sequence[Passage], language: str = "en") -> str:
    lines = [say("knowledge.suggestions", language)]
    lines += [
        say("knowledge.suggestion_line", language, title=h.title, label=h.label) for h in hits
    ]
    return "\n".join(lines)


def escalation_text(language: str = "en") -> str:
    """What a customer is told when the knowledge base has no reliable answer."""
    return say("knowledge.escalation", language)


def none_of_these(language: str = "en") -> str:
    """The label of the "did you mean" button that asks a person instead."""
    return say("knowledge.none_of_these", language)


def answer_command(passage: Passage) -> str:
    """What a "did you mean" button sends: choosing the passage answers it verbatim."""
    return f"/answer {passage.ref}"


def clarify_text(hits: Sequence[Passage], language: str = "en") -> str:
    """The options as a numbered list, for platforms (and people) without buttons."""
    lines = [say("knowledge.clarify", language)]
    lines += [
        say("knowledge.clarify_line", language, number=n, title=h.title)
        for n, h in enumerate(hits, start=1)
    ]
    numbers = say("knowledge.clarify_or", language).join(str(n) for n in range(1, len(hits) + 1))
    lines.append(say("knowledge.clarify_how", language, numbers=numbers, human=HUMAN_COMMAND))
    return "\n".join(lines)
