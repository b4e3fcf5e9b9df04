"""Delivering replies and keeping the books on them.

A reply is rendered, then stored with the event marked answered (retried
while the database is away: an answer that got out must be on record before
the conversation moves on). Failures are marked on the event, retried later
only where an adapter sweeps; the knowledge base's answers, drafts and
invitations to rate are logged beside.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from bot.errors import StorageError
from bot.generation import Generation
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.messages import say
from bot.plans import KnowledgePlan, ReviseDraft
from bot.team.service import Team
from bot.types import Accepted, Render, Reply, ReplyKind
from storage.repository import MessageKind, Repository

log = logging.getLogger(__name__)

# How long a delivered answer's bookkeeping is retried before giving up on it.
RECORD_RETRY_FOR = 600.0
_RECORD_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)


class Delivered:
    """A ``Render`` that counts the replies that got out whole."""

    def __init__(self, render: Render) -> None:
        self._render = render
        self.count = 0

    async def __call__(self, reply: Reply) -> None:
        await self._render(reply)
        self.count += 1


class Answers:
    """Delivers fixed replies and records what was answered, and how it failed."""

    def __init__(
        self,
        *,
        repository: Repository,
        team: Team,
        knowledge: KnowledgeBase | None,
        sweeps: Callable[[str], bool],
        record_retry_for: float = RECORD_RETRY_FOR,
    ) -> None:
        self.repository = repository
        self.team = team
        self.knowledge = knowledge
        # Whether a platform's messages can be answered later (its adapter sweeps).
        self.sweeps = sweeps
        self.record_retry_for = record_retry_for

    async def deliver(
        self, accepted: Accepted, reply: Reply, render: Render, *, kind: MessageKind
    ) -> Reply:
        """Render a reply whose text is known, then record it (a render that
        fails marks the event for a retry, and raises)."""
        try:
            await render(reply)
        except BaseException as exc:
            await self.fail(accepted, f"delivery failed: {exc!r}", retry=True)
            raise
        await self.record(accepted, text=reply.text, kind=kind, latency_ms=elapsed_ms(accepted))
        return reply

    async def handled(self, accepted: Accepted) -> Reply:
        """Settle a message that gets no reply (relayed, or told once already)."""
        await self.repository.mark_handled(accepted.stored)
        return Reply(ReplyKind.SILENT, inbound_id=accepted.inbound_id)

    async def record(
        self,
        accepted: Accepted,
        *,
        text: str,
        kind: MessageKind,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        latency_ms: int | None = None,
    ) -> None:
        """Store a delivered answer, retrying while the database is away.

        The retries run in the answer's own task, holding the conversation's
        turn and the event's claim (renewed once the database answers again):
        an answer that got out must not be answered again, and a later
        message must not be answered, nor a replayed /reset wipe it, before
        this one is on record.
        """
        deadline = time.monotonic() + self.record_retry_for
        attempt = 0
        while True:
            try:
                await self.repository.record_answer(
                    accepted.stored,
                    text=text,
                    kind=kind,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    latency_ms=latency_ms,
                )
                if attempt:
                    log.info("inbound %s: answer recorded after all", accepted.inbound_id)
                return
            except StorageError as exc:
                if time.monotonic() >= deadline:
                    log.error(
                        "inbound %s: delivered answer never recorded; it may be answered again",
                        accepted.inbound_id,
                    )
                    raise
                delay = _RECORD_DELAYS[min(attempt, len(_RECORD_DELAYS) - 1)]
                attempt += 1
                log.warning(
                    "inbound %s: answer delivered but not recorded (%s); retrying in %.1f s",
                    accepted.inbound_id,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def record_knowledge(self, accepted: Accepted, plan: KnowledgePlan, text: str) -> None:
        """Log the knowledge base's answer (an escalation opens one)."""
        if self.knowledge is None:
            return
        inbound = accepted.inbound
        try:
            await self.knowledge.record(
                plan,
                question=accepted.text,
                answer=text,
                tenant=inbound.ref.tenant,
                conversation_key=inbound.ref.key,
                user_id=inbound.platform_user,
            )
        except StorageError:
            # The customer still gets the answer; the operator sees what is missing.
            log.exception("inbound %s: could not log the %s answer", accepted.inbound_id, plan.path)

    async def keep_draft(
        self, accepted: Accepted, plan: ReviseDraft, generation: Generation
    ) -> None:
        """Keep the model's revision of ``plan``'s draft as the open draft
        (not one that was stopped or came back empty)."""
        text = generation.text.strip()
        if self.knowledge is None or generation.stopped or not text:
            return
        # Keeps its author; revising it restarts its clock.
        written = dataclasses.replace(plan.draft, text=text, updated=time.time())
        try:
            await self.knowledge.set_draft(accepted.inbound.ref.key, written.dumps())
        except StorageError:
            log.exception("inbound %s: could not keep the draft", accepted.inbound_id)

    async def invite_rating(self, accepted: Accepted) -> None:
        """Open an invitation to rate the answer just given."""
        try:
            await self.team.repository.invite_rating(
                tenant=accepted.inbound.ref.tenant,
                conversation_id=accepted.stored.conversation_id,
                user_id=accepted.inbound.platform_user,
                question=accepted.text,
                inbound_id=accepted.inbound_id,
            )
        except StorageError:
            log.exception("inbound %s: could not store the invitation to rate", accepted.inbound_id)

    async def fail(self, accepted: Accepted, error: str, *, retry: bool) -> None:
        """Mark the event failed; ``retry`` only where its platform sweeps."""
        retry = retry and self.sweeps(accepted.inbound.ref.platform)
        try:
            await self.repository.mark_failed(accepted.inbound_id, error, retry=retry)
        except StorageError:
            # The user has their answer; a bookkeeping failure only costs a retry.
            log.exception("could not mark inbound %s failed", accepted.inbound_id)

    async def storage_failed(
        self, accepted: Accepted, delivered: Delivered, exc: StorageError
    ) -> Reply:
        """The records failed mid-answer: say so plainly (unless an answer got
        out already) and leave the event to be answered again."""
        log.error("inbound %s: storage failed mid-answer: %s", accepted.inbound_id, exc)
        # Only where a sweep can answer it later is the customer promised that.
        later = self.sweeps(accepted.inbound.ref.platform)
        key = "conversation.records_delayed" if later else "conversation.records_unreachable"
        text = say(key, accepted.language)
        reply = Reply(ReplyKind.NOTICE, text=text, inbound_id=accepted.inbound_id)
        reply.failed = True
        if delivered.count:
            return reply
        try:
            await delivered(reply)
        except Exception:
            # Telling the customer is a courtesy; the event is marked for a retry below.
            log.exception("inbound %s: could not tell the customer", accepted.inbound_id)
        # If this fails too, the claim lapses and the sweep takes the event.
        await self.fail(accepted, f"storage failed: {exc}", retry=True)
        return reply


def elapsed_ms(accepted: Accepted) -> int:
    """Milliseconds since ``accepted`` arrived in this process."""
    return int((time.monotonic() - accepted.received) * 1000)
