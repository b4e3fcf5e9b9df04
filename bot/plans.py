"""Plans: what to do with a message, decided without calling the model.

The knowledge base (and a command such as ``/draft`` or ``/human``) returns
a plan; the conversation manager executes it. Knowledge plans carry passages
(``bot.knowledge.passages``) from any source. ``Clarify`` offers the closest
passages as choices. Only ``Grounded``, ``Chat`` and
``ReviseDraft`` need the model, and the manager runs all three through its one
generation path (streaming, ``/reset``, token accounting, error messages).
``HandOff`` opens a ticket for the support team.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from bot.foreign_answers import foreign_language, quote_note
from bot.knowledge.drafting import Draft
from bot.knowledge.passages import Passage
from bot.knowledge.policy import (
    HUMAN_COMMAND,
    Decision,
    answer_command,
    cite_list,
    clarify_text,
    escalation_text,
    none_of_these,
    suggestions_text,
    verbatim_text,
)
from llm.base import ChatMessage

P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class Verbatim:
    """Quote a passage (a curated answer) word for word, with its source."""

    passage: Passage
    decision: Decision
    reason: str
    # The customer's language, for the fixed words around the quote.
    language: str = "en"
    # Other documents' sections listed under the quote's citation, apart.
    see_also: tuple[Passage, ...] = ()

    @property
    def quoted(self) -> str:
        """The passage and its source, without a word about its language."""
        return verbatim_text(self.passage, self.language, self.see_also)

    @property
    def foreign(self) -> str | None:
        """The passage's language when the customer's is another (None: theirs)."""
        return foreign_language(self.passage, self.language)

    @property
    def text(self) -> str:
        """The quote, after one line saying its language when it is not the
        customer's (``bot.foreign_answers``: quoting it is the fallback of
        translating it)."""
        source = self.foreign
        return f"{quote_note(source, self.language)}\n\n{self.quoted}" if source else self.quoted

    path = "verbatim"


@dataclass(frozen=True, slots=True)
class Escalate:
    """Say the knowledge base has no reliable answer and record the question for a person.

    ``candidates`` are the passages that were considered, best first.
    """

    reason: str
    candidates: tuple[Passage, ...]
    decision: Decision | None
    # The closest passages are listed before the escalation notice (faq mode).
    suggest: bool = False
    language: str = "en"

    @property
    def preface(self) -> str:
        return suggestions_text(self.candidates, self.language) if self.suggest else ""

    @property
    def text(self) -> str:
        notice = escalation_text(self.language)
        return f"{self.preface}\n\n{notice}" if self.preface else notice

    path = "escalated"

    @classmethod
    def with_suggestions(cls, reason: str, decision: Decision) -> Escalate:
        return cls(reason, decision.hits, decision, suggest=True)


@dataclass(frozen=True, slots=True)
class Clarify:
    """Ask which passage the customer means ("did you mean ...?").

    ``options`` (best first, at most three) are shown as buttons that answer
    the passage verbatim, plus one that asks a person; ``text`` lists them
    numbered for platforms without buttons (a reply "1" chooses the first).
    """

    options: tuple[Passage, ...]
    decision: Decision
    language: str = "en"

    @property
    def text(self) -> str:
        return clarify_text(self.options, self.language)

    @property
    def buttons(self) -> tuple[tuple[str, str], ...]:
        return (
            *((p.title, answer_command(p)) for p in self.options),
            (none_of_these(self.language), HUMAN_COMMAND),
        )

    @property
    def reason(self) -> str:
        return self.decision.reason

    path = "clarify"


@dataclass(frozen=True, slots=True)
class Grounded:
    """The model answers from ``decision.hits`` only, citing them; ``fallback``
    is shown instead when no part of its answer passes the guard."""

    question: str
    messages: Sequence[ChatMessage]
    decision: Decision
    fallback: Verbatim | Escalate
    max_new_tokens: int
    language: str = "en"

    @property
    def sources(self) -> str:
        return cite_list(self.decision.hits, self.language)

    path = "grounded"


@dataclass(frozen=True, slots=True)
class Chat:
    """Plain conversation with the model over the stored history.

    ``system_prompt``: the tenant's persona, or "" for the configured prompt.
    """

    system_prompt: str = ""

    path = "model"


@dataclass(frozen=True, slots=True)
class ReviseDraft:
    """Write ``draft`` (its text empty) or revise it by ``messages``' instruction."""

    draft: Draft
    messages: Sequence[ChatMessage]

    path = "draft"


@dataclass(frozen=True, slots=True)
class Translate:
    """A machine translation for an agent (``/translate``): ``heading`` marks
    it as one, ``messages`` ask the model for it."""

    heading: str
    messages: Sequence[ChatMessage]
    max_new_tokens: int = 400

    path = "translate"


@dataclass(frozen=True, slots=True)
class HandOff:
    """Hand the conversation to the support team (``trigger``: request, ...)."""

    trigger: str
    reason: str = ""

    path = "handoff"


Plan = Verbatim | Escalate | Clarify | Grounded | Chat | ReviseDraft | HandOff | Translate


def in_language(plan: P, language: str) -> P:
    """``plan`` with its fixed words in ``language`` (a grounded answer's
    fallback too); a plan without fixed words is returned as it is."""
    if isinstance(plan, Grounded):
        fallback = in_language(plan.fallback, language)
        return replace(plan, language=language, fallback=fallback)  # type: ignore[return-value]
    if isinstance(plan, Verbatim | Escalate | Clarify) and plan.language != language:
        return replace(plan, language=language)  # type: ignore[return-value]
    return plan


KnowledgePlan = Verbatim | Escalate | Clarify | Grounded
