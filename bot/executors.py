"""Carrying out plans: one executor per plan type, found by the plan's class.

Fixed texts (``Verbatim``, ``Clarify``, an ``Escalate`` nobody can take)
are delivered as they are; ``Chat``, ``Grounded`` and ``ReviseDraft`` stream
through the one generation path; ``HandOff`` and an ``Escalate`` a support
team can take open a ticket. Adding a plan type is one executor and one
entry in ``Executors``.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, Generic, TypeVar

from bot import foreign_answers
from bot.answers import Answers, elapsed_ms
from bot.generation import Generation, GenerationPath
from bot.handoff.escalation import Escalation
from bot.knowledge import drafting
from bot.messages import say
from bot.plans import (
    Chat,
    Clarify,
    Escalate,
    Grounded,
    HandOff,
    Plan,
    ReviseDraft,
    Translate,
    Verbatim,
    in_language,
)
from bot.team.service import RATING_BUTTONS, Team, invitation
from bot.types import Accepted, Render, Reply, ReplyKind
from llm.base import GenerationRequest, SamplingParams
from storage.repository import MessageKind

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Plan)


class Executor(ABC, Generic[P]):
    """Carries out one type of plan for one message and delivers the reply.

    ``uses_model``: the plan costs model time (so a daily quota applies).
    """

    uses_model: ClassVar[bool] = False

    @abstractmethod
    async def execute(
        self,
        accepted: Accepted,
        plan: P,
        render: Render,
        stop: asyncio.Event,
        *,
        kind: MessageKind,
    ) -> Reply: ...


class FixedText(Executor[Verbatim | Escalate | Clarify]):
    """A text decided without the model, delivered as it is and logged.

    ``rated``: with ``DESKMATE_ASK_RATING=all``, a customer's answer
    invites a rating.
    """

    def __init__(self, *, answers: Answers, team: Team, rated: bool) -> None:
        self.answers = answers
        self.team = team
        self.rated = rated

    def buttons(self, plan: Verbatim | Escalate | Clarify) -> tuple[tuple[str, str], ...]:
        return ()

    async def execute(
        self,
        accepted: Accepted,
        plan: Verbatim | Escalate | Clarify,
        render: Render,
        stop: asyncio.Event,
        *,
        kind: MessageKind,
        shown: str | None = None,
    ) -> Reply:
        """``shown``: the text to deliver instead of the plan's own."""
        invite = self.rated and self.team.rates_answers and kind == "chat"
        buttons = RATING_BUTTONS if invite else self.buttons(plan)
        shown = plan.text if shown is None else shown
        await self.answers.record_knowledge(accepted, plan, shown)
        text = shown + (f"\n\n{invitation(accepted.language)}" if invite else "")
        reply = Reply(ReplyKind.ANSWER, text=text, inbound_id=accepted.inbound_id, buttons=buttons)
        reply = await self.answers.deliver(accepted, reply, render, kind=kind)
        if invite:
            await self.answers.invite_rating(accepted)
        return reply


class Choices(FixedText):
    """``Clarify``: fixed text whose options are also buttons (so no rating,
    which would compete with them)."""

    def buttons(self, plan: Verbatim | Escalate | Clarify) -> tuple[tuple[str, str], ...]:
        assert isinstance(plan, Clarify)
        return plan.buttons


class VerbatimAnswer(Executor[Verbatim]):
    """A verbatim answer; one in a language other than the customer's is
    translated by the model first under ``DESKMATE_FOREIGN_ANSWERS=translate``
    (``bot.foreign_answers``), and quoted with a note about its language when
    the translation fails its checks or the setting is ``quote``.

    The translation is checked whole before anything is shown, so the
    customer never sees words that are then replaced by the quote.
    """

    def __init__(self, *, fixed: FixedText, generation: GenerationPath, mode: str) -> None:
        self.fixed = fixed
        self.generation = generation
        self.mode = mode

    async def execute(
        self,
        accepted: Accepted,
        plan: Verbatim,
        render: Render,
        stop: asyncio.Event,
        *,
        kind: MessageKind,
    ) -> Reply:
        source = plan.foreign
        if self.mode != foreign_answers.TRANSLATE or source is None:
            return await self.fixed.execute(accepted, plan, render, stop, kind=kind)
        if not foreign_answers.translatable(plan.passage):
            return await self.fixed.execute(accepted, plan, render, stop, kind=kind)
        messages, sampling = foreign_answers.translation_request(
            plan.passage, source=source, target=plan.language
        )
        generation = Generation(self.generation.request(accepted, messages, sampling))
        async for _ in self.generation.model_text(accepted, generation, stop):
            pass
        shown: str | None = None
        if generation.error is None and not generation.stopped:
            await self.generation.record_usage(accepted, "translate", generation)
            original = plan.passage.text
            if foreign_answers.faithful(original, generation.text, plan.language, source):
                shown = foreign_answers.translated_text(
                    plan.quoted, generation.text, source=source, language=plan.language
                )
            else:
                log.info("inbound %s: translation not shown, quoted", accepted.inbound_id)
        return await self.fixed.execute(accepted, plan, render, stop, kind=kind, shown=shown)


class EscalateExecutor(Executor[Escalate]):
    """To the support space that serves the customer's tenant; else the escalation text."""

    def __init__(self, *, escalation: Escalation, fixed: FixedText) -> None:
        self.escalation = escalation
        self.fixed = fixed

    async def execute(
        self,
        accepted: Accepted,
        plan: Escalate,
        render: Render,
        stop: asyncio.Event,
        *,
        kind: MessageKind,
    ) -> Reply:
        space = await self.escalation.space_for(accepted)
        if space is not None:
            return await self.escalation.escalate_to_team(
                accepted, plan, render, kind=kind, space=space
            )
        return await self.fixed.execute(accepted, plan, render, stop, kind=kind)


class HandOffExecutor(Executor[HandOff]):
    def __init__(self, *, escalation: Escalation) -> None:
        self.escalation = escalation

    async def execute(
        self,
        accepted: Accepted,
        plan: HandOff,
        render: Render,
        stop: asyncio.Event,
        *,
        kind: MessageKind,
    ) -> Reply:
        return await self.escalation.hand_off(accepted, plan, render, kind=kind)


class ModelAnswer(Executor[P]):
    """A plan the model answers: streamed through the one generation path,
    then its cost and text recorded; a failure is marked and (but for drafts)
    counts toward handing the conversation to a person.

    Subclasses say how the request is built, how the stream is shaped, and
    what is kept of the answer.
    """

    uses_model = True
    # What the usage is recorded as, for quotas and /stats.
    usage: ClassVar[str] = "chat"
    rated: ClassVar[bool] = True

    def __init__(
        self,
        *,
        generation: GenerationPath,
        answers: Answers,
        escalation: Escalation,
        team: Team,
    ) -> None:
        self.generation = generation
        self.answers = answers
        self.escalation = escalation
        self.team = team

    @abstractmethod
    async def request(self, accepted: Accepted, plan: P) -> GenerationRequest: ...

    @abstractmethod
    def chunks(
        self, accepted: Accepted, plan: P, generation: Generation, stop: asyncio.Event
    ) -> AsyncIterator[str]: ...

    async def keep(self, accepted: Accepted, plan: P, generation: Generation, reply: Reply) -> str:
        """Log what the plan needs logged; returns the answer's text to store
        (by default the reply as shown, without the invitation to rate)."""
        return _without_invitation(reply.text, accepted.language)

    def stored_kind(self, kind: MessageKind) -> MessageKind:
        return kind

    async def after_failure(self, accepted: Accepted) -> None:
        await self.escalation.after_failure(accepted)

    async def execute(
        self,
        accepted: Accepted,
        plan: P,
        render: Render,
        stop: asyncio.Event,
        *,
        kind: MessageKind,
    ) -> Reply:
        # DESKMATE_ASK_RATING=all: the customer is invited to rate the answer.
        invite = self.rated and self.team.rates_answers and kind == "chat"
        generation = Generation(await self.request(accepted, plan))
        chunks = self.chunks(accepted, plan, generation, stop)
        reply = Reply(
            ReplyKind.ANSWER,
            inbound_id=accepted.inbound_id,
            buttons=RATING_BUTTONS if invite else (),
        )
        if invite:
            chunks = _then_invite(chunks, generation, reply, accepted.language)
        reply.attach(chunks)
        try:
            await render(reply)
            await reply.collect()
        except BaseException as exc:
            await self.answers.fail(accepted, f"delivery failed: {exc!r}", retry=True)
            raise
        if generation.error is not None:
            reply.failed = True
            # The notice told the customer to send it again: answering it
            # later as well would be a stale second answer.
            await self.answers.fail(accepted, generation.error, retry=False)
            await self.after_failure(accepted)
            return reply
        await self.generation.record_usage(accepted, self.usage, generation)
        await self.answers.record(
            accepted,
            text=await self.keep(accepted, plan, generation, reply),
            kind=self.stored_kind(kind),
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            latency_ms=elapsed_ms(accepted),
        )
        if invite and not generation.stopped:
            await self.answers.invite_rating(accepted)
        return reply


class ChatAnswer(ModelAnswer[Chat]):
    async def request(self, accepted: Accepted, plan: Chat) -> GenerationRequest:
        return await self.generation.chat_request(accepted, plan)

    def chunks(
        self, accepted: Accepted, plan: Chat, generation: Generation, stop: asyncio.Event
    ) -> AsyncIterator[str]:
        return self.generation.chat_chunks(accepted, generation, stop)

    async def keep(
        self, accepted: Accepted, plan: Chat, generation: Generation, reply: Reply
    ) -> str:
        # The model's words, without notices meant for this one delivery.
        stored = generation.text.strip()
        if generation.stopped:
            stored += " " + say("conversation.stopped", accepted.language)
        return stored


class GroundedAnswer(ModelAnswer[Grounded]):
    usage = "grounded"

    async def request(self, accepted: Accepted, plan: Grounded) -> GenerationRequest:
        sampling = SamplingParams(max_new_tokens=plan.max_new_tokens, temperature=0.0)
        return self.generation.request(accepted, plan.messages, sampling)

    def chunks(
        self, accepted: Accepted, plan: Grounded, generation: Generation, stop: asyncio.Event
    ) -> AsyncIterator[str]:
        return self.generation.grounded_chunks(accepted, plan, generation, stop)

    async def keep(
        self, accepted: Accepted, plan: Grounded, generation: Generation, reply: Reply
    ) -> str:
        if generation.settled is not None:
            # The knowledge base's log gets the reply as shown, sources and all.
            await self.answers.record_knowledge(accepted, generation.settled, reply.text)
        return _without_invitation(reply.text, accepted.language)


class DraftAnswer(ModelAnswer[ReviseDraft]):
    usage = "draft"
    rated = False

    async def request(self, accepted: Accepted, plan: ReviseDraft) -> GenerationRequest:
        return self.generation.request(accepted, plan.messages, drafting.SAMPLING)

    def chunks(
        self, accepted: Accepted, plan: ReviseDraft, generation: Generation, stop: asyncio.Event
    ) -> AsyncIterator[str]:
        return self.generation.draft_chunks(accepted, plan, generation, stop)

    async def keep(
        self, accepted: Accepted, plan: ReviseDraft, generation: Generation, reply: Reply
    ) -> str:
        await self.answers.keep_draft(accepted, plan, generation)
        return _without_invitation(reply.text, accepted.language)

    def stored_kind(self, kind: MessageKind) -> MessageKind:
        # A draft stays out of the conversation's history: in a group, the
        # model must not hand it to someone who asks what it last wrote.
        return "command"

    async def after_failure(self, accepted: Accepted) -> None:
        # A failed draft is the author's to retry, not a customer left unanswered.
        return


class TranslateAnswer(ModelAnswer[Translate]):
    """``/translate`` in a ticket: the model's translation, marked as one, for
    the agent alone (nothing reaches the customer until the agent sends it)."""

    usage = "translate"
    rated = False

    async def request(self, accepted: Accepted, plan: Translate) -> GenerationRequest:
        sampling = SamplingParams(max_new_tokens=plan.max_new_tokens, temperature=0.0)
        return self.generation.request(accepted, plan.messages, sampling)

    def chunks(
        self, accepted: Accepted, plan: Translate, generation: Generation, stop: asyncio.Event
    ) -> AsyncIterator[str]:
        return self.generation.translation_chunks(accepted, plan, generation, stop)

    def stored_kind(self, kind: MessageKind) -> MessageKind:
        return "command"

    async def after_failure(self, accepted: Accepted) -> None:
        # The agent asked and was told; no customer waits on it.
        return


class Executors:
    """The executor of each plan type."""

    def __init__(self, by_plan: Mapping[type[Any], Executor[Any]]) -> None:
        self._by_plan = dict(by_plan)

    @classmethod
    def standard(
        cls,
        *,
        answers: Answers,
        generation: GenerationPath,
        escalation: Escalation,
        team: Team,
        foreign_mode: str = foreign_answers.QUOTE,
    ) -> Executors:
        """An executor for every plan in ``bot.plans``; ``foreign_mode``:
        ``translate`` or ``quote`` (``bot.foreign_answers``)."""

        def model(kind: type[ModelAnswer[Any]]) -> ModelAnswer[Any]:
            return kind(generation=generation, answers=answers, escalation=escalation, team=team)

        unrated = FixedText(answers=answers, team=team, rated=False)
        return cls(
            {
                Verbatim: VerbatimAnswer(
                    fixed=FixedText(answers=answers, team=team, rated=True),
                    generation=generation,
                    mode=foreign_mode,
                ),
                Clarify: Choices(answers=answers, team=team, rated=False),
                Escalate: EscalateExecutor(escalation=escalation, fixed=unrated),
                HandOff: HandOffExecutor(escalation=escalation),
                Chat: model(ChatAnswer),
                Grounded: model(GroundedAnswer),
                ReviseDraft: model(DraftAnswer),
                Translate: model(TranslateAnswer),
            }
        )

    @property
    def plan_types(self) -> frozenset[type[Any]]:
        """The plan types there is an executor for."""
        return frozenset(self._by_plan)

    def of(self, plan: Plan) -> Executor[Any]:
        return self._by_plan[type(plan)]

    def uses_model(self, plan: Plan) -> bool:
        """Whether carrying ``plan`` out costs model time."""
        return self.of(plan).uses_model

    async def execute(
        self,
        accepted: Accepted,
        plan: Plan,
        render: Render,
        stop: asyncio.Event,
        *,
        kind: MessageKind,
    ) -> Reply:
        # Plans are made in English words; their fixed words are the customer's.
        plan = in_language(plan, accepted.language)
        return await self.of(plan).execute(accepted, plan, render, stop, kind=kind)


async def _then_invite(
    chunks: AsyncIterator[str], generation: Generation, reply: Reply, language: str
) -> AsyncIterator[str]:
    async for chunk in chunks:
        yield chunk
    if generation.error is None and not generation.stopped:
        yield f"\n\n{invitation(language)}"
    else:
        # Adapters add buttons once the stream has ended: a failed or stopped
        # answer is nothing to rate.
        reply.buttons = ()


def _without_invitation(text: str, language: str) -> str:
    return text.removesuffix(f"\n\n{invitation(language)}")
