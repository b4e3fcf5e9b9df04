"""The support space's commands: the ticket actions as chat commands,
``/tickets`` and ``/takeover``; and an agent's plain message in a ticket,
which is the reply action.

The handlers are registered in the one command registry
(``bot.commands.builtin_commands``) with their scope; they read the support
space they run in from ``SpaceContext``. This module does not import
``bot.commands``: the registry imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.handoff import actions, suggested
from bot.handoff.actions import Actor, TicketAction
from bot.handoff.config import SupportSpace
from bot.handoff.desk import HelpDesk
from bot.messages import say
from bot.metrics import Metrics
from bot.team.service import Team
from bot.types import Accepted, Inbound
from storage.handoff_repo import Ticket
from storage.outbox_doubts import Resent
from storage.repository import ConversationAddress, HistoryItem


class Suggester(Protocol):
    """What ``/suggest`` asks of the copilot (``bot.handoff.copilot.Copilot``)."""

    async def ask_again(self, accepted: Accepted, ticket: Ticket) -> str: ...


class ConversationRecords(Protocol):
    """What ``/takeover`` reads about the conversation it takes."""

    async def conversation(self, conversation_id: int) -> ConversationAddress | None: ...

    async def last_customer(self, conversation_id: int) -> tuple[str, str]: ...

    async def last_customer_text(self, conversation_id: int) -> str: ...

    async def history(
        self, conversation_id: int, *, upto_message_id: int | None, limit: int
    ) -> list[HistoryItem]: ...


@dataclass(frozen=True, slots=True)
class SpaceContext:
    """Where a message in a support space was written: the help desk, the space,
    the ticket whose thread it is in (None outside any), and the inbound event
    that keys everything it causes."""

    desk: HelpDesk
    space: SupportSpace
    ticket: Ticket | None
    inbound_id: int
    records: ConversationRecords
    metrics: Metrics
    # The copilot that drafts suggested replies (None: no knowledge base), and
    # the message in hand (a new suggestion's draft is keyed by it).
    copilot: Suggester | None = None
    accepted: Accepted | None = None


class DeskCommandContext(Protocol):
    """The part of ``bot.commands.CommandContext`` these handlers read."""

    @property
    def inbound(self) -> Inbound: ...

    @property
    def args(self) -> str: ...

    @property
    def language(self) -> str: ...

    @property
    def team(self) -> Team: ...

    @property
    def support(self) -> SpaceContext | None: ...


def _actor(ctx: DeskCommandContext, support: SpaceContext) -> Actor:
    inbound = ctx.inbound
    return Actor.in_chat(
        inbound.platform_user, inbound.user_name, support.inbound_id, support.space, ctx.language
    )


async def _run(ctx: DeskCommandContext, action: TicketAction) -> str:
    support = ctx.support
    # The registry runs ticket commands only inside a ticket.
    assert support is not None and support.ticket is not None
    said = await action(support.desk, support.ticket, _actor(ctx, support), ctx.args)
    return said or ""


async def claim(ctx: DeskCommandContext) -> str:
    return await _run(ctx, actions.claim)


async def resolve(ctx: DeskCommandContext) -> str:
    return await _run(ctx, actions.resolve)


async def release(ctx: DeskCommandContext) -> str:
    return await _run(ctx, actions.release)


async def note(ctx: DeskCommandContext) -> str:
    return await _run(ctx, actions.note)


async def learn(ctx: DeskCommandContext) -> str:
    """In a ticket, the learn action; elsewhere, where to use it."""
    support = ctx.support
    if support is None or support.ticket is None:
        return say("commands.learn_elsewhere", ctx.language)
    return await _run(ctx, actions.learn)


_SUGGESTION_ACTIONS: dict[str, TicketAction] = {
    "send": suggested.send,
    "edit": suggested.edit,
    "discard": suggested.discard,
}


async def suggest(ctx: DeskCommandContext) -> str:
    """``/suggest``: a new suggested reply for the customer's last message;
    ``/suggest send|edit|discard N``: what the suggestion's buttons do."""
    support = ctx.support
    assert support is not None and support.ticket is not None
    verb, _, rest = ctx.args.strip().partition(" ")
    action = _SUGGESTION_ACTIONS.get(verb.lower())
    if action is not None:
        said = await action(support.desk, support.ticket, _actor(ctx, support), rest)
        return said or ""
    if verb:
        return say("copilot.usage", ctx.language)
    if support.copilot is None or support.accepted is None:
        return say("copilot.unavailable", ctx.language)
    if not support.ticket.open:
        return say("handoff.already_closed", ctx.language, id=support.ticket.id)
    return await support.copilot.ask_again(support.accepted, support.ticket)


async def tickets(ctx: DeskCommandContext) -> str:
    support = ctx.support
    assert support is not None
    return await support.desk.list_tickets(support.space)


async def takeover(ctx: DeskCommandContext) -> str:
    """An agent takes a customer's live conversation as a claimed ticket."""
    support = ctx.support
    assert support is not None
    desk, records = support.desk, support.records
    if not ctx.args.strip().isdigit():
        return say("handoff.takeover_usage", ctx.language)
    conversation = int(ctx.args.strip())
    address = await records.conversation(conversation)
    if address is None:
        return say("handoff.no_conversation", ctx.language, conversation=conversation)
    if await desk.spaces.of_chat(address.platform, address.tenant, address.chat) is not None:
        return say("handoff.space_conversation", ctx.language)
    if not await desk.serves(support.space, address):
        return say("handoff.not_served", ctx.language, conversation=conversation)
    customer, name = await records.last_customer(conversation)
    agent = ctx.inbound
    ticket, created = await desk.take_over(
        conversation,
        customer=customer,
        customer_name=name,
        space=support.space,
        agent=agent.platform_user,
        agent_name=agent.user_name,
        history=await records.history(conversation, upto_message_id=None, limit=12),
        key=f"takeover:{support.inbound_id}",
    )
    if not created:
        return say(
            "handoff.takeover_exists",
            ctx.language,
            conversation=conversation,
            id=ticket.id,
            state=ticket.state,
        )
    support.metrics.handoffs.labels("takeover").inc()
    await ctx.team.audit(
        address.tenant,
        agent.platform_user,
        "takeover",
        f"conversation {conversation}",
        {"ticket": ticket.id},
    )
    return say("handoff.takeover_done", ctx.language, conversation=conversation, id=ticket.id)


_RESENT = {
    Resent.QUEUED: "handoff.resend_queued",
    Resent.UNKNOWN: "handoff.resend_unknown",
    Resent.SETTLED: "handoff.resend_settled",
    Resent.ERASED: "handoff.resend_erased",
}


async def resend(ctx: DeskCommandContext) -> str:
    """Send again a message to a customer whose delivery could not be confirmed
    (the agents were told, with its number), once, from the ticket's own space."""
    support = ctx.support
    assert support is not None
    wanted = ctx.args.strip()
    if not wanted.isdigit():
        return say("handoff.resend_usage", ctx.language)
    row = int(wanted)
    resent = await support.desk.tickets.resend(row, space_chat=support.space.chat)
    return say(_RESENT[resent], ctx.language, row=row)


async def from_agent(
    desk: HelpDesk, accepted: Accepted, ticket: Ticket, space: SupportSpace
) -> str | None:
    """An agent's message (not a command) in a ticket of ``space``: the reply action.

    Returns what the agent is told, or None when it went to the customer.
    """
    refused = desk.not_relayable(accepted, ticket)
    if refused is not None:
        return refused
    inbound = accepted.inbound
    actor = Actor.in_chat(
        inbound.platform_user, inbound.user_name, accepted.inbound_id, space, accepted.language
    )
    reply_to = str(inbound.meta.get("reply_to") or "")
    if reply_to:
        # A reply to a suggestion's message is its edited text (Telegram's Edit).
        shown = await desk.tickets.suggestions.posted_as(space.chat, reply_to)
        if shown is not None and shown.ticket_id == ticket.id:
            return await suggested.reply_to_suggestion(desk, ticket, actor, shown, accepted.text)
    return await actions.reply(desk, ticket, actor, accepted.text)


def space_help(usages: Sequence[tuple[str, str]], language: str = "en") -> str:
    """The support space's help: each (usage, description) of its commands, in
    order; neighbours that share a description are named together."""
    parts: list[tuple[list[str], str]] = []
    for usage, description in usages:
        if parts and parts[-1][1] == description:
            parts[-1][0].append(usage)
        else:
            parts.append(([usage], description))
    listed = "; ".join(f"{', '.join(names)} {description}" for names, description in parts)
    return say("handoff.space_help", language, commands=listed)
