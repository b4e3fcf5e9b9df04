"""Putting a conversation through to the support team.

A customer who asks for a person, a question the knowledge base cannot
answer reliably, and a conversation whose answers failed twice in a row
each open the conversation's ticket (with the model's case summary where
it can write one in time) and queue it for the support space.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from bot.answers import Answers
from bot.errors import StorageError
from bot.generation import Generation, GenerationPath
from bot.handoff.config import SupportSpace
from bot.handoff.desk import HelpDesk
from bot.knowledge.passages import Passage
from bot.messages import say
from bot.metrics import Metrics
from bot.plans import Escalate, HandOff
from bot.types import Accepted, Render, Reply, ReplyKind
from llm.base import ChatMessage, GenerationRequest, SamplingParams
from storage.repository import MessageKind, Repository

log = logging.getLogger(__name__)

# A ticket's case summary must not keep the customer waiting long.
SUMMARY_TIMEOUT = 20.0
SUMMARY_SAMPLING = SamplingParams(max_new_tokens=120, temperature=0.0)


class Escalation:
    """Opens tickets for conversations that need a person."""

    def __init__(
        self,
        *,
        desk: HelpDesk | None,
        repository: Repository,
        answers: Answers,
        generation: GenerationPath,
        metrics: Metrics,
    ) -> None:
        # None or unconnected: /human says no team is there.
        self.desk = desk
        self.repository = repository
        self.answers = answers
        self.generation = generation
        self.metrics = metrics

    @property
    def connected(self) -> bool:
        """Whether the help desk is on (some tenants may still have no space)."""
        return self.desk is not None and self.desk.connected

    async def space_for(self, accepted: Accepted) -> SupportSpace | None:
        """The support space that serves this customer's tenant, if any."""
        desk = self.desk
        if desk is None or not desk.connected:
            return None
        return await desk.space_for(accepted.inbound)

    async def hand_off(
        self, accepted: Accepted, plan: HandOff, render: Render, *, kind: MessageKind
    ) -> Reply:
        space = await self.space_for(accepted)
        if space is None:
            # Kept for the operator to see, and said plainly: nobody is promised.
            said = say(
                "handoff.no_team" if not self.connected else "handoff.no_desk", accepted.language
            )
            await self.answers.record_knowledge(
                accepted, Escalate("the customer asked for a person", (), None), said
            )
            reply = Reply(ReplyKind.NOTICE, text=said, inbound_id=accepted.inbound_id)
            return await self.answers.deliver(accepted, reply, render, kind=kind)
        notice = await self.open_ticket(accepted, space, trigger=plan.trigger)
        reply = Reply(ReplyKind.NOTICE, text=notice, inbound_id=accepted.inbound_id)
        return await self.answers.deliver(accepted, reply, render, kind=kind)

    async def escalate_to_team(
        self,
        accepted: Accepted,
        plan: Escalate,
        render: Render,
        *,
        kind: MessageKind,
        space: SupportSpace,
    ) -> Reply:
        notice = await self.open_ticket(
            accepted, space, trigger="escalation", candidates=plan.candidates
        )
        text = f"{plan.preface}\n\n" if plan.preface else ""
        text += f"{say('knowledge.no_reliable_answer', accepted.language)} {notice}"
        await self.answers.record_knowledge(accepted, plan, text)
        reply = Reply(ReplyKind.ANSWER, text=text, inbound_id=accepted.inbound_id)
        return await self.answers.deliver(accepted, reply, render, kind=kind)

    async def open_ticket(
        self,
        accepted: Accepted,
        space: SupportSpace,
        *,
        trigger: str,
        candidates: Sequence[Passage] = (),
        summarize: bool = True,
    ) -> str:
        """Open the conversation's ticket and queue it for ``space`` (the one that
        serves the customer); returns what the customer is told."""
        desk = self.desk
        assert desk is not None
        history = await self.repository.history(
            accepted.stored.conversation_id,
            upto_message_id=accepted.stored.message_id,
            limit=12,
        )
        if await desk.open_ticket_of(accepted.stored.conversation_id) is None and summarize:
            summary = await self.summarize(accepted, desk.summary_messages(history))
        else:
            summary = ""
        opened = await desk.open(
            accepted, trigger=trigger, history=history, space=space, candidates=candidates
        )
        if opened.created:
            self.metrics.handoffs.labels(trigger).inc()
        if not opened.ticket.posted:
            # Queued even when the ticket was already open: a crash between
            # opening and queueing must not leave a ticket nobody can see.
            await desk.post(opened.ticket, summary or opened.ticket.summary)
        return opened.notice

    async def summarize(self, accepted: Accepted, messages: Sequence[ChatMessage]) -> str:
        """The model's case summary for a ticket ("" when it cannot write one in time)."""
        timeout = min(self.generation.llm_timeout or SUMMARY_TIMEOUT, SUMMARY_TIMEOUT)
        request = GenerationRequest(
            messages, SUMMARY_SAMPLING, timeout, f"summary:{accepted.inbound_id}"
        )
        generation = Generation(request)
        async for _ in self.generation.model_text(accepted, generation, asyncio.Event()):
            pass
        if generation.error is not None:
            return ""
        return generation.text.strip()[:1000]

    async def after_failure(self, accepted: Accepted) -> None:
        """A conversation whose answers failed twice in a row goes to a person."""
        desk = self.desk
        if desk is None or not desk.connected:
            return
        conversation = accepted.stored.conversation_id
        try:
            if await desk.tickets.consecutive_failures(conversation) < 2:
                return
            if await desk.open_ticket_of(conversation) is not None:
                return
            space = await self.space_for(accepted)
            if space is None:
                return
            notice = await self.open_ticket(
                accepted, space, trigger="model_failure", summarize=False
            )
            ticket = await desk.open_ticket_of(conversation)
            if ticket is not None:
                await desk.tickets.enqueue(
                    f"opened:{ticket.id}",
                    ticket.customer_address,
                    notice,
                    kind="notice",
                    ticket_id=ticket.id,
                )
        except StorageError:
            log.exception("inbound %s: could not hand over after failures", accepted.inbound_id)
