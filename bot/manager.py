"""The conversation manager: where every message is stored, routed and answered.

Every inbound message is stored (``accept``) before it is answered
(``process``). Messages of one conversation are answered in arrival order;
different conversations run concurrently.

The manager composes the rooms that do the work, and does none itself:
``bot.turns`` (the inbox, claims and leases, each conversation's order and
``/reset``), ``bot.routing`` (which route a message takes), ``bot.executors``
(carrying out each type of plan), ``bot.generation`` (the one generation
path: every model answer streams there, stops on ``/reset``, records its
tokens and turns LLM failures into the user's message),
``bot.handoff.escalation`` (opening tickets) and ``bot.answers``
(delivering and recording replies). The parts it is given (repository,
backend, team, metrics, breaker, commands, knowledge base, help desk) are
built and wired by the composition root, ``bot.app``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from dataclasses import replace

from bot.answers import RECORD_RETRY_FOR, Answers, Delivered
from bot.commands import CommandRegistry
from bot.errors import StorageError, busy_message
from bot.executors import Executors
from bot.generation import GenerationPath
from bot.guard import OutputGuard
from bot.handoff.copilot import Copilot
from bot.handoff.desk import HelpDesk
from bot.handoff.escalation import Escalation
from bot.knowledge.company_facts import CompanyFacts
from bot.knowledge.drafting import Draft
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.language import Languages, detect_language, resolve_language
from bot.messages import say
from bot.metrics import Metrics
from bot.routing import Router, standard_routes
from bot.team.access import Access
from bot.team.service import Team
from bot.throttle import CircuitBreaker, PersonThrottle
from bot.turns import Turns
from bot.types import Accepted, ConversationRef, Inbound, MenuEntry, Render, Reply, ReplyKind
from llm.base import Backend, SamplingParams
from storage.repository import ForgetResult, Repository, Stats

__all__ = [
    "EMPTY_MESSAGE",
    "FAILED_MESSAGE",
    "STORAGE_DELAY_MESSAGE",
    "TIMEOUT_MESSAGE",
    "ConversationManager",
    "Render",
    "busy_message",
]

log = logging.getLogger(__name__)

# Texts the tests compare replies with (the catalog is bot.messages).
EMPTY_MESSAGE = say("conversation.empty")
FAILED_MESSAGE = say("conversation.failed")
TIMEOUT_MESSAGE = say("conversation.timeout")
STORAGE_DELAY_MESSAGE = say("conversation.records_delayed")


class ConversationManager:
    """Implements ``bot.types.Conversations`` for the adapters, and the
    housekeeping (``bot.commands.Housekeeping``) commands ask for."""

    def __init__(
        self,
        *,
        repository: Repository,
        backend: Backend,
        team: Team,
        metrics: Metrics,
        breaker: CircuitBreaker,
        commands: CommandRegistry,
        system_prompt: str,
        sampling: SamplingParams,
        llm_timeout: float | None,
        max_input_chars: int,
        history_messages: int,
        admins: Collection[str] = (),
        knowledge: KnowledgeBase | None = None,
        desk: HelpDesk | None = None,
        user_rate: int = 0,
        memory: int = 10_000,
        heartbeat: float | None = None,
        record_retry_for: float = RECORD_RETRY_FOR,
        guard: OutputGuard | None = None,
        company_facts: CompanyFacts | None = None,
        languages: Languages | None = None,
        foreign_answers: str = "quote",
    ) -> None:
        self.repository = repository
        # Each message's language; None: every customer is answered in English.
        self.languages = languages
        # A verbatim answer in another language: "translate" or "quote".
        self.foreign_answers = foreign_answers
        self.backend = backend
        self.system_prompt = system_prompt
        self.admins = frozenset(admins)
        self.commands = commands
        # FAQ retrieval, modes and drafts; None: every message goes to the model.
        self.knowledge = knowledge
        # Roles per tenant, audit trail, quotas, ratings, learned answers.
        self.team = team
        # The support team's tickets; None or unconnected: /human says no team is there.
        self.desk = desk
        self.metrics = metrics
        self.turns = Turns(
            repository=repository,
            metrics=metrics,
            max_input_chars=max_input_chars,
            history_messages=history_messages,
            memory=memory,
            heartbeat=heartbeat,
            throttle=PersonThrottle(rate=user_rate, memory=memory) if user_rate else None,
            stops_others=self._wipes_groups,
        )
        self.answers = Answers(
            repository=repository,
            team=team,
            knowledge=knowledge,
            sweeps=self.turns.sweeps,
            record_retry_for=record_retry_for,
        )
        self.generation = GenerationPath(
            backend=backend,
            breaker=breaker,
            turns=self.turns,
            team=team,
            metrics=metrics,
            system_prompt=system_prompt,
            sampling=sampling,
            llm_timeout=llm_timeout,
            guard=guard,
        )
        self.company_facts = company_facts
        self.executors, self.router = self._rooms()

    def _rooms(self) -> tuple[Executors, Router]:
        """The plan executors and the routes, over the parts already in place."""
        escalation = Escalation(
            desk=self.desk,
            repository=self.repository,
            answers=self.answers,
            generation=self.generation,
            metrics=self.metrics,
        )
        executors = Executors.standard(
            answers=self.answers,
            generation=self.generation,
            escalation=escalation,
            team=self.team,
            foreign_mode=self.foreign_answers,
        )
        # Suggested replies for the agents of a ticket (bot.handoff.copilot).
        self.copilot = (
            Copilot(
                desk=self.desk,
                knowledge=self.knowledge,
                generation=self.generation,
            )
            if self.desk is not None
            else None
        )
        routes = standard_routes(
            commands=self.commands,
            house=self,
            knowledge=self.knowledge,
            desk=self.desk,
            team=self.team,
            repository=self.repository,
            metrics=self.metrics,
            answers=self.answers,
            executors=executors,
            throttle=self.turns.throttle,
            company_facts=self.company_facts,
            copilot=self.copilot,
        )
        return executors, Router(routes)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start renewing this process's claims and leases (idempotent)."""
        self.turns.start()

    async def aclose(self) -> None:
        """Stop renewing, and release the leases (the next process need not wait)."""
        if self.copilot is not None:
            await self.copilot.aclose()
        await self.turns.aclose()

    async def take_lease(self, name: str, *, purpose: str, wait: float | None = None) -> None:
        """Hold ``name`` for as long as this process runs, or raise ``ConfigError``.

        A lease left by a process that was killed lapses within the claim
        lease; until ``wait`` (that long by default) it is waited for.
        """
        await self.turns.take_lease(name, purpose=purpose, wait=wait)

    # -- entry points ------------------------------------------------------------

    async def accept(self, inbound: Inbound) -> Accepted:
        """Store ``inbound`` (raises ``StorageError`` if that fails)."""
        return await self.turns.accept(inbound)

    async def handle(self, inbound: Inbound, render: Render) -> Reply:
        return await self.process(await self.accept(inbound), render)

    async def process(self, accepted: Accepted, render: Render) -> Reply:
        """Answer an accepted message, rendering the reply as it streams.

        ``render`` receives the reply and should iterate it; whatever it leaves
        unread is drained here so the stored answer is always complete.
        """
        if accepted.duplicate:
            return Reply(ReplyKind.DUPLICATE, inbound_id=accepted.inbound_id)

        async def answer(stop: asyncio.Event) -> Reply:
            delivered = Delivered(render)
            try:
                return await self.router.route(await self._in_language(accepted), delivered, stop)
            except StorageError as exc:
                return await self.answers.storage_failed(accepted, delivered, exc)

        return await self.turns.run(accepted, answer)

    async def _in_language(self, accepted: Accepted) -> Accepted:
        """``accepted`` with the language it is answered in: its own, else the
        conversation's as of this message (read when it was accepted; an event
        a sweep hands back reads it now), else the tenant's or deployment's."""
        if self.languages is None:
            return accepted
        ref = accepted.inbound.ref
        try:
            if accepted.stored.language_read:
                # Detected and stored when it was accepted: one look-up of the
                # tenant's default at most (cached), no round trip of its own.
                found = self.languages.accepted(
                    accepted.detected,
                    accepted.stored.language,
                    None
                    if accepted.detected or accepted.stored.language
                    else await self.languages.of_tenant(ref.platform, ref.tenant),
                )
                return replace(accepted, language=found.language)
            found = await self.languages.resolve(
                accepted.text,
                conversation_id=accepted.stored.conversation_id,
                platform=ref.platform,
                tenant=ref.tenant,
                command=accepted.command is not None,
            )
        except StorageError as exc:
            detected = detect_language(accepted.text) if accepted.command is None else None
            log.warning("inbound %s: language not stored: %s", accepted.inbound_id, exc)
            language = resolve_language(detected, deployment=self.languages.default)
            return replace(accepted, language=language, detected=detected)
        return replace(accepted, language=found.language, detected=found.detected)

    async def pending(self, platform: str) -> list[Accepted]:
        """Stored events of ``platform`` whose turn it is and that nobody answers
        (never answered, due for a retry, left by a stopped process), claimed
        for answering."""
        return await self.pending_of_tenant(platform, None)

    async def pending_of_tenant(self, platform: str, tenant: str | None) -> list[Accepted]:
        """``pending``, only of ``tenant`` (another bot's events are left to it)."""
        return await self.turns.pending_of_tenant(platform, tenant)

    async def set_active(self, ref: ConversationRef, active: bool) -> None:
        await self.repository.set_active(ref, active)

    async def move_conversation(self, old: ConversationRef, new: ConversationRef) -> None:
        await self.repository.move_conversation(old, new)
        self.turns.invalidate()

    def menu(self, language: str | None = None) -> list[MenuEntry]:
        said = language or (self.languages.default if self.languages else "en")
        return [MenuEntry(c.name, c.describe(said)) for c in self.commands.visible(Access.EVERYONE)]

    def listens_to(self, ref: ConversationRef) -> bool:
        return self.desk is not None and self.desk.listens_to(ref)

    async def staff_language(self, ref: ConversationRef) -> str:
        if self.languages is None:
            return "en"
        try:
            own = await self.languages.of_tenant(ref.platform, ref.tenant)
        except StorageError as exc:
            # A dialog in the deployment's language beats no dialog.
            log.warning("%s/%s: tenant language unknown: %s", ref.platform, ref.tenant, exc)
            own = None
        return resolve_language(None, tenant=own, deployment=self.languages.default)

    # -- housekeeping --------------------------------------------------------------

    async def forget_user(
        self, platform_user: str, *, upto_inbound: int | None = None
    ) -> ForgetResult:
        """Delete a person's messages (in every conversation) and the answers to
        them; with ``upto_inbound``, only those stored up to that event."""
        # Tickets and learned answers find the person's words through their
        # stored messages: erased before those, and a retry after a failure
        # still finds whatever is left.
        if self.desk is not None:
            await self.desk.tickets.forget(platform_user)
        await self.team.repository.forget(platform_user)
        result = await self.repository.forget_user(platform_user, upto_inbound=upto_inbound)
        self.turns.invalidate()
        return result

    async def reset(
        self, conversation_id: int, *, upto_inbound: int | None, author: str | None = None
    ) -> int:
        """Forget a conversation's history up to ``upto_inbound`` (with
        ``author``: only theirs); returns how many messages went."""
        return await self.repository.reset_conversation(
            conversation_id, upto_inbound=upto_inbound, author=author
        )

    async def clear_draft(self, conversation_key: str, *, author: str) -> bool:
        """Close the open draft if ``author`` opened it or it expired; another
        member's live draft stays."""
        if self.knowledge is None:
            return False
        raw = await self.knowledge.open_draft(conversation_key)
        if not raw:
            return False
        draft = Draft.loads(raw)
        if not (draft.belongs_to(author) or draft.expired(time.time())):
            return False
        await self.knowledge.set_draft(conversation_key, None)
        return True

    async def _wipes_groups(self, inbound: Inbound) -> bool:
        """Whether the sender's /reset in a group wipes everyone's part: the
        tenant's admins' does (and stops the answer in progress)."""
        return await self.team.access_of(inbound) >= Access.ADMIN

    async def stats(self) -> Stats:
        return await self.repository.stats()

    def is_admin(self, inbound: Inbound) -> bool:
        """An owner: one of ``DESKMATE_ADMINS``, an admin of every tenant."""
        return inbound.platform_user in self.admins
