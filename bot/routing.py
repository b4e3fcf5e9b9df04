"""Where a message goes: an ordered list of routes, the first that matches
answers it.

In order: a message in a support space goes to the help desk; a customer
with an open ticket is relayed to it (the model is not asked); a command
runs its handler; an empty message is told to type; a thumbs-up or -down
rates the last answer; someone sending too fast is asked to wait; anything
else gets a plan from the knowledge base (or plain chat, though not about
the company's own facts in support mode), within the daily quota when it
needs the model. Adding a route is one class and one place in
``standard_routes``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from bot.answers import Answers
from bot.commands import CommandRegistry, Housekeeping, Scope
from bot.errors import StorageError
from bot.executors import Executors
from bot.handoff.commands import SpaceContext, from_agent
from bot.handoff.config import SupportSpace
from bot.handoff.copilot import Copilot
from bot.handoff.desk import HelpDesk
from bot.handoff.intent import wants_human
from bot.knowledge.company_facts import CompanyFacts
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.messages import say
from bot.metrics import Metrics
from bot.plans import Chat, Escalate, HandOff, Plan
from bot.team.service import Team, looks_like_rating, quota_notice
from bot.throttle import PersonThrottle, TokenBuckets
from bot.types import Accepted, Render, Reply, ReplyKind
from storage.handoff_repo import Ticket
from storage.repository import Repository

log = logging.getLogger(__name__)

T = TypeVar("T")


class Route(ABC, Generic[T]):
    """One kind of message and how it is answered.

    Routes are asked in order, each at most once per message: ``matches``
    returns what it found (None: not this route's message) and may do the
    work that decides it (a rating is recorded, the rate limit's verdict
    on the message read); ``handle`` answers with what ``matches`` found.
    """

    @abstractmethod
    async def matches(self, accepted: Accepted) -> T | None: ...

    @abstractmethod
    async def handle(
        self, accepted: Accepted, render: Render, stop: asyncio.Event, found: T
    ) -> Reply: ...


class Router:
    """The routes, in order; the last one must match every message."""

    def __init__(self, routes: Sequence[Route[Any]]) -> None:
        self.routes = tuple(routes)

    async def route(self, accepted: Accepted, render: Render, stop: asyncio.Event) -> Reply:
        for route in self.routes:
            found = await route.matches(accepted)
            if found is not None:
                return await route.handle(accepted, render, stop, found)
        raise LookupError(f"no route took inbound {accepted.inbound_id}")


class CommandRoute(Route[tuple[str, str]]):
    """A command runs its handler; its text is the reply, or its plan is carried out."""

    def __init__(
        self,
        *,
        commands: CommandRegistry,
        team: Team,
        house: Housekeeping,
        answers: Answers,
        executors: Executors,
    ) -> None:
        self.commands = commands
        self.team = team
        self.house = house
        self.answers = answers
        self.executors = executors

    async def matches(self, accepted: Accepted) -> tuple[str, str] | None:
        return accepted.command

    async def handle(
        self, accepted: Accepted, render: Render, stop: asyncio.Event, found: tuple[str, str]
    ) -> Reply:
        result = await self.run_command(accepted, *found)
        if isinstance(result, str):
            reply = Reply(ReplyKind.COMMAND, text=result, inbound_id=accepted.inbound_id)
            return await self.answers.deliver(accepted, reply, render, kind="command")
        return await self.executors.execute(accepted, result, render, stop, kind="command")

    async def run_command(
        self,
        accepted: Accepted,
        name: str,
        args: str,
        *,
        scope: Scope = Scope.ANYWHERE,
        support: SpaceContext | None = None,
    ) -> str | Plan:
        return await self.commands.dispatch(
            name,
            args,
            inbound=accepted.inbound,
            conversation_id=accepted.stored.conversation_id,
            house=self.house,
            team=self.team,
            scope=scope,
            support=support,
            inbound_id=accepted.inbound_id,
            language=accepted.language,
        )


class SupportSpaceRoute(Route[SupportSpace]):
    """A message in a support space goes to the help desk."""

    def __init__(
        self,
        *,
        desk: HelpDesk | None,
        repository: Repository,
        team: Team,
        metrics: Metrics,
        commands: CommandRoute,
        answers: Answers,
        executors: Executors,
        copilot: Copilot | None = None,
    ) -> None:
        self.desk = desk
        self.repository = repository
        self.team = team
        self.metrics = metrics
        self.commands = commands
        self.answers = answers
        self.executors = executors
        self.copilot = copilot

    async def matches(self, accepted: Accepted) -> SupportSpace | None:
        desk = self.desk
        if desk is None or not desk.connected:
            return None
        return await desk.space_of(accepted.inbound)

    async def handle(
        self, accepted: Accepted, render: Render, stop: asyncio.Event, found: SupportSpace
    ) -> Reply:
        assert self.desk is not None
        # Agents are answered in their tenant's language, not a customer's.
        agents = await self.desk.agents_language(found)
        accepted = dataclasses.replace(accepted, language=agents)
        return await self._in_support_space(accepted, render, stop, found)

    async def _in_support_space(
        self, accepted: Accepted, render: Render, stop: asyncio.Event, space: SupportSpace
    ) -> Reply:
        """A message in the support space: commands with the space's scope, and
        agents' replies in a ticket relayed to its customer; their chatter
        outside tickets gets no answer."""
        desk = self.desk
        assert desk is not None
        ticket = await desk.ticket_in_space(accepted.inbound)
        command = accepted.command
        if command is None and ticket is not None:
            command = self.commands.commands.parse_bare(accepted.text)
        if command is None:
            text = None if ticket is None else await from_agent(desk, accepted, ticket, space)
        else:
            support = SpaceContext(
                desk=desk,
                space=space,
                ticket=ticket,
                inbound_id=accepted.inbound_id,
                records=self.repository,
                metrics=self.metrics,
                copilot=self.copilot,
                accepted=accepted,
            )
            scope = Scope.SPACE if ticket is None else Scope.TICKET
            result = await self.commands.run_command(
                accepted, *command, scope=scope, support=support
            )
            if isinstance(result, HandOff):
                result = say("handoff.human_in_space", accepted.language)
            if not isinstance(result, str):
                return await self.executors.execute(accepted, result, render, stop, kind="command")
            text = result
        if not text:
            return await self.answers.handled(accepted)
        reply = Reply(ReplyKind.COMMAND, text=text, inbound_id=accepted.inbound_id)
        return await self.answers.deliver(accepted, reply, render, kind="command")


class OpenTicketRoute(Route[Ticket]):
    """A person has this conversation: the model is not asked at all."""

    def __init__(
        self,
        *,
        desk: HelpDesk | None,
        commands: CommandRegistry,
        answers: Answers,
        copilot: Copilot | None = None,
    ) -> None:
        self.desk = desk
        self.commands = commands
        self.answers = answers
        # Drafts a suggested reply for the agents once the message is relayed.
        self.copilot = copilot

    async def matches(self, accepted: Accepted) -> Ticket | None:
        desk = self.desk
        if desk is None or not desk.connected:
            return None
        ticket = await desk.open_ticket_of(accepted.stored.conversation_id)
        if ticket is not None and not self._own_command(accepted):
            return ticket
        return None

    def _own_command(self, accepted: Accepted) -> bool:
        """A command a customer in a handoff still runs themselves (the rest is relayed)."""
        command = accepted.command
        return command is not None and self.commands.customer_runs(command[0])

    async def handle(
        self, accepted: Accepted, render: Render, stop: asyncio.Event, found: Ticket
    ) -> Reply:
        assert self.desk is not None
        await self.desk.from_customer(accepted, found)
        if self.copilot is not None:
            self.copilot.after_relay(accepted, found)
        return await self.answers.handled(accepted)


class EmptyRoute(Route[bool]):
    """A message without text (a photo, a sticker): the customer is asked to type."""

    def __init__(self, *, answers: Answers) -> None:
        self.answers = answers

    async def matches(self, accepted: Accepted) -> bool | None:
        return True if not accepted.text else None

    async def handle(
        self, accepted: Accepted, render: Render, stop: asyncio.Event, found: bool
    ) -> Reply:
        text = say("conversation.empty", accepted.language)
        reply = Reply(ReplyKind.NOTICE, text=text, inbound_id=accepted.inbound_id)
        return await self.answers.deliver(accepted, reply, render, kind="command")


class RatingRoute(Route[str]):
    """A thumbs-up or -down that rates an open invitation; matching records it.

    Without an open invitation, a thumb is an ordinary message.
    """

    def __init__(self, *, team: Team, answers: Answers) -> None:
        self.team = team
        self.answers = answers

    async def matches(self, accepted: Accepted) -> str | None:
        if not looks_like_rating(accepted.text):
            return None
        return await self.team.rate(
            accepted.inbound,
            accepted.stored.conversation_id,
            accepted.text,
            invited=True,
            language=accepted.language,
        )

    async def handle(
        self, accepted: Accepted, render: Render, stop: asyncio.Event, found: str
    ) -> Reply:
        reply = Reply(ReplyKind.COMMAND, text=found, inbound_id=accepted.inbound_id)
        return await self.answers.deliver(accepted, reply, render, kind="command")


class RateLimitRoute(Route[float]):
    """Someone sending faster than the throttle's rate is asked, once a
    spell, to wait; what they send meanwhile is taken without a word.

    The messages were counted when they arrived (``Turns.accept``): here
    only what was found then is read."""

    def __init__(self, *, throttle: PersonThrottle | None, answers: Answers) -> None:
        # None: no limit.
        self.throttle = throttle
        self.answers = answers

    @property
    def buckets(self) -> TokenBuckets | None:
        return None if self.throttle is None else self.throttle.buckets

    async def matches(self, accepted: Accepted) -> float | None:
        if self.throttle is None:
            return None
        return self.throttle.verdict(accepted.inbound_id, accepted.inbound.platform_user)

    async def handle(
        self, accepted: Accepted, render: Render, stop: asyncio.Event, found: float
    ) -> Reply:
        if not found:
            return await self.answers.handled(accepted)  # told once already
        text = say("conversation.too_fast", accepted.language, seconds=max(1, round(found)))
        reply = Reply(ReplyKind.NOTICE, text=text, inbound_id=accepted.inbound_id)
        return await self.answers.deliver(accepted, reply, render, kind="command")


class PlanRoute(Route[bool]):
    """Everything else: the knowledge base's plan (plain chat without one),
    carried out; a plan that needs the model waits for tomorrow's quota."""

    def __init__(
        self,
        *,
        knowledge: KnowledgeBase | None,
        team: Team,
        answers: Answers,
        executors: Executors,
        company_facts: CompanyFacts | None = None,
    ) -> None:
        self.knowledge = knowledge
        self.team = team
        self.answers = answers
        self.executors = executors
        # DESKMATE_COMPANY_FACTS=refuse: the model does not answer for the
        # company (None: it may).
        self.company_facts = company_facts

    async def matches(self, accepted: Accepted) -> bool | None:
        return True

    async def handle(
        self, accepted: Accepted, render: Render, stop: asyncio.Event, found: bool
    ) -> Reply:
        plan = await self._plan(accepted)
        if self.executors.uses_model(plan) and await self.team.over_quota(accepted.inbound):
            # Said once a day; after that such messages go unanswered, while
            # verbatim answers and commands, which cost no model time, go on.
            if not await self.team.first_quota_notice(accepted.inbound):
                return await self.answers.handled(accepted)
            reply = Reply(
                ReplyKind.NOTICE,
                text=quota_notice(accepted.language),
                inbound_id=accepted.inbound_id,
            )
            return await self.answers.deliver(accepted, reply, render, kind="command")
        return await self.executors.execute(accepted, plan, render, stop, kind="chat")

    async def _plan(self, accepted: Accepted) -> Plan:
        plan = await self._knowledge_plan(accepted)
        if type(plan) is Chat and self.company_facts is not None:
            return await self._unsupported_fact(accepted, plan, self.company_facts)
        return plan

    async def _unsupported_fact(
        self, accepted: Accepted, plan: Chat, company_facts: CompanyFacts
    ) -> Plan:
        """Plain chat, unless the message asks the company's own facts in
        support mode: with no knowledge source behind them (the only way
        support mode plans plain chat), the model would make them up, so the
        question is escalated like one the knowledge base cannot answer."""
        subject = await company_facts.subject(accepted.text)
        if subject is None:
            return plan
        if self.knowledge is not None:
            ref = accepted.inbound.ref
            try:
                if await self.knowledge.mode_for(ref.key, ref.tenant) != "support":
                    return plan
            except StorageError:
                # Guessing the company's facts is the worse failure.
                log.warning("inbound %s: mode unknown, not guessing", accepted.inbound_id)
        log.info(
            "inbound %s: a question of company facts (%s), no knowledge source: escalated",
            accepted.inbound_id,
            subject,
        )
        return Escalate(f"company facts ({subject}) with no knowledge source", (), None)

    async def _knowledge_plan(self, accepted: Accepted) -> Plan:
        """The knowledge base's plan for a plain message; plain chat without one.

        A knowledge base that fails escalates (the model must not stand in for
        the FAQ), except in ``assistant`` mode, which chats anyway.
        """
        if wants_human(accepted.text):
            return HandOff("request")
        knowledge = self.knowledge
        if knowledge is None:
            return Chat()
        ref = accepted.inbound.ref
        try:
            return await knowledge.plan(
                accepted.text,
                tenant=ref.tenant,
                conversation_key=ref.key,
                user=accepted.inbound.platform_user,
                language=accepted.language,
            )
        except Exception as exc:
            # Retrieval, embeddings or storage: whatever broke, the customer
            # is still answered (escalated) and the operator sees the cause.
            log.exception("inbound %s: the knowledge base failed", accepted.inbound_id)
            failure = f"the knowledge base failed: {exc!r}"
        try:
            if await knowledge.mode_for(ref.key, ref.tenant) == "assistant":
                return Chat()
        except StorageError:
            log.warning("inbound %s: mode unknown, escalating", accepted.inbound_id)
        return Escalate(failure, (), None)


def standard_routes(
    *,
    commands: CommandRegistry,
    house: Housekeeping,
    knowledge: KnowledgeBase | None,
    desk: HelpDesk | None,
    team: Team,
    repository: Repository,
    metrics: Metrics,
    answers: Answers,
    executors: Executors,
    throttle: PersonThrottle | None,
    company_facts: CompanyFacts | None = None,
    copilot: Copilot | None = None,
) -> list[Route[Any]]:
    """Every route, in the order they are asked."""
    command = CommandRoute(
        commands=commands, team=team, house=house, answers=answers, executors=executors
    )
    return [
        SupportSpaceRoute(
            desk=desk,
            repository=repository,
            team=team,
            metrics=metrics,
            commands=command,
            answers=answers,
            executors=executors,
            copilot=copilot,
        ),
        OpenTicketRoute(desk=desk, commands=commands, answers=answers, copilot=copilot),
        command,
        EmptyRoute(answers=answers),
        RatingRoute(team=team, answers=answers),
        RateLimitRoute(throttle=throttle, answers=answers),
        PlanRoute(
            knowledge=knowledge,
            team=team,
            answers=answers,
            executors=executors,
            company_facts=company_facts,
        ),
    ]
