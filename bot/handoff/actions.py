"""Ticket actions: claim, reply, note, release, resolve and learn, each one
function that the support space's chat commands and the operator console's
buttons both call, so both write the same audit entries, send the same
notices and invite the same ratings.

An action is taken by an ``Actor``. Everything it causes is queued under a
key derived from the actor's ``cause`` (the inbound event in chat, the form's
action id in the console), so a replayed event or a double submit changes and
relays nothing twice. The two places differ only in what they answer the
agent, and the console copies what it did into the ticket's thread, where
the other agents would otherwise not see it.

An action taken in a support space acts only on tickets of the tenants that
space serves; the console's actor has no space (the console is the operator's).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from bot.handoff.config import SupportSpace
from bot.handoff.desk import HelpDesk, customer_language
from bot.messages import say
from bot.team import learning
from bot.team.service import RATING_BUTTONS, ticket_invitation
from storage.handoff_repo import Ticket


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts on a ticket and why: ``agent`` is the platform user id (in the
    console, of the person signed in; ``console:owner`` for the owner's shared
    sign-in), ``name`` what the customer and the team see, ``cause`` the
    inbound event id in chat or the form's action id in the console, ``space``
    the support space a chat action is taken in."""

    agent: str
    name: str
    cause: str
    console: bool = False
    space: SupportSpace | None = None
    # The language the actor is answered in (the console's: its reader's).
    language: str = "en"

    @classmethod
    def in_chat(
        cls, agent: str, name: str, inbound_id: int, space: SupportSpace, language: str = "en"
    ) -> Actor:
        return cls(agent, name, str(inbound_id), space=space, language=language)

    @classmethod
    def at_console(cls, agent: str, name: str, action_id: str, language: str = "en") -> Actor:
        """The person signed in to the console (``agent``, who the audit
        records) acting through the form with ``action_id``, answered in the
        console's ``language``."""
        return cls(agent, name, f"console:{action_id}", console=True, language=language)


# What every ticket action looks like to its callers: the text for the agent,
# or None where chat stays silent (a relayed reply).
TicketAction = Callable[[HelpDesk, Ticket, Actor, str], Awaitable[str | None]]
A = TypeVar("A", bound=Callable[..., Awaitable[str | None]])


def served(action: A) -> A:
    """Refuse the action on a ticket of a tenant the actor's support space does
    not serve (a ticket left there by another setting, a stray thread)."""

    @functools.wraps(action)
    async def guarded(desk: HelpDesk, ticket: Ticket, actor: Actor, args: str = "") -> str | None:
        space = actor.space
        if space is not None and not await desk.serves(space, ticket.customer_address):
            return say("handoff.ticket_not_served", actor.language, id=ticket.id)
        return await action(desk, ticket, actor, args)

    return guarded  # type: ignore[return-value]


@served
async def claim(desk: HelpDesk, ticket: Ticket, actor: Actor, _args: str = "") -> str:
    """Take a waiting ticket: replies go to its customer, who is told a person joined."""
    if ticket.state == "human":
        if ticket.agent == actor.agent and not actor.console:
            return say("handoff.already_yours", actor.language, id=ticket.id)
        return say(
            "handoff.with_agent",
            actor.language,
            id=ticket.id,
            agent=ticket.agent_name or ticket.agent,
        )
    if not ticket.open:
        key = "handoff.console_meanwhile" if actor.console else "handoff.already_closed"
        return say(key, actor.language, id=ticket.id)
    if not await _take(desk, ticket, actor) and actor.console:
        return say("handoff.console_meanwhile", actor.language, id=ticket.id)
    return say(
        "handoff.console_claimed" if actor.console else "handoff.claimed",
        actor.language,
        id=ticket.id,
    )


@served
async def reply(desk: HelpDesk, ticket: Ticket, actor: Actor, text: str) -> str | None:
    """Relay an agent's answer to the ticket's customer (claiming a waiting ticket)."""
    if not ticket.open:
        if actor.console:
            return say("handoff.console_closed", actor.language, id=ticket.id)
        return say(
            "handoff.closed_in_space",
            actor.language,
            id=ticket.id,
            conversation=ticket.conversation_id,
        )
    text = text.strip()
    if not text:
        return say("handoff.console_reply_first", actor.language)
    key = actor.cause if actor.console else f"relay:{actor.cause}"
    if not await relay(desk, ticket, actor, text, key=key):
        return (
            say("handoff.console_reply_again", actor.language, id=ticket.id)
            if actor.console
            else None
        )
    # Answered in the agent's own words: the suggestions still waiting were not used.
    await desk.tickets.suggestions.ignore_pending(
        ticket.id, agent=actor.agent, agent_name=actor.name
    )
    if not actor.console:
        return None
    return say("handoff.console_reply_queued", actor.language, id=ticket.id)


async def relay(desk: HelpDesk, ticket: Ticket, actor: Actor, text: str, *, key: str) -> bool:
    """Send an agent's ``text`` to the ticket's customer, signed, once per ``key``
    (claiming a waiting ticket); False when ``key`` was relayed before. The
    console's copy goes to the ticket's thread, where the other agents see it."""
    if ticket.state == "waiting":
        await _take(desk, ticket, actor)
    queued = await desk.tickets.enqueue(
        key,
        ticket.customer_address,
        say(
            "handoff.agent_said",
            customer_language(ticket),
            signature=desk.settings.signature,
            text=text,
        ),
        kind="to_customer",
        ticket_id=ticket.id,
    )
    if not queued:
        return False
    await desk.tickets.note(ticket.id, "to_customer", actor.agent, text)
    if actor.console:
        await _tell_space(
            desk,
            ticket,
            f"{key}:space",
            say(
                "handoff.console_space_replied",
                await desk.ticket_language(ticket),
                agent=actor.name,
                text=text,
            ),
        )
    return True


@served
async def note(desk: HelpDesk, ticket: Ticket, actor: Actor, text: str) -> str:
    """A note on the ticket for the team; never sent to the customer."""
    text = text.strip()
    if not text:
        return say(
            "handoff.console_note_first" if actor.console else "handoff.note_usage", actor.language
        )
    # The console's copy for the support space doubles as the note's
    # idempotency key; in chat the note is the message in the thread itself.
    if actor.console and not await _tell_space(
        desk,
        ticket,
        f"{actor.cause}:note",
        say(
            "handoff.console_space_note",
            await desk.ticket_language(ticket),
            agent=actor.name,
            text=text,
        ),
    ):
        return say("handoff.console_note_again", actor.language, id=ticket.id)
    await desk.tickets.note(ticket.id, "note", actor.agent, text)
    return say("handoff.noted", actor.language, id=ticket.id)


@served
async def release(desk: HelpDesk, ticket: Ticket, actor: Actor, _args: str = "") -> str:
    """Give a claimed ticket back to the queue."""
    if not ticket.open and not actor.console:
        return say("handoff.already_closed", actor.language, id=ticket.id)
    _, changed = await desk.tickets.transition(
        ticket.id, "waiting", by=actor.agent, by_name=actor.name, expect=("human",)
    )
    if not changed:
        return say("handoff.not_claimed", actor.language, id=ticket.id)
    await audit(desk, ticket, actor, "ticket.release")
    return say("handoff.released", actor.language, id=ticket.id)


@served
async def resolve(desk: HelpDesk, ticket: Ticket, actor: Actor, _args: str = "") -> str:
    """Close the ticket: the bot answers the customer again, who is invited to rate
    the team's help where ratings are asked for."""
    if ticket.open:
        _, changed = await desk.tickets.transition(
            ticket.id, "closed", by=actor.agent, by_name=actor.name, reason="resolved"
        )
    else:
        changed = False
    if not changed:
        return say("handoff.already_closed", actor.language, id=ticket.id)
    await audit(desk, ticket, actor, "ticket.resolve")
    await desk.tickets.suggestions.ignore_pending(ticket.id)
    language = customer_language(ticket)
    text = say("handoff.resolved_notice", language)
    buttons: tuple[tuple[str, str], ...] = ()
    team = desk.team
    if team is not None and team.rates_tickets:
        await team.repository.invite_rating(
            tenant=ticket.customer_address.tenant,
            conversation_id=ticket.conversation_id,
            user_id=ticket.customer,
            question=await learning.ticket_question(desk.tickets, ticket),
            ticket_id=ticket.id,
        )
        text += "\n\n" + ticket_invitation(language)
        buttons = RATING_BUTTONS
    await desk.tickets.enqueue(
        f"resolved:{ticket.id}",
        ticket.customer_address,
        text,
        kind="notice",
        ticket_id=ticket.id,
        buttons=buttons,
    )
    if actor.console:
        await _tell_space(
            desk,
            ticket,
            f"{actor.cause}:space",
            say(
                "handoff.console_space_resolved",
                await desk.ticket_language(ticket),
                id=ticket.id,
                agent=actor.name,
            ),
        )
    return say("handoff.resolved", actor.language, id=ticket.id)


@served
async def learn(desk: HelpDesk, ticket: Ticket, actor: Actor, args: str) -> str:
    """Propose the ticket's last question and the agent's answer as an FAQ entry
    (``args``: an FAQ id, to add a phrasing of that entry instead)."""
    team = desk.team
    if team is None:
        return say("handoff.learn_unavailable", actor.language)
    return await learning.learn(team, desk.tickets, ticket, actor.agent, args, actor.language)


# The console's buttons, by the name in their URL.
CONSOLE_ACTIONS: dict[str, TicketAction] = {
    "claim": claim,
    "reply": reply,
    "note": note,
    "release": release,
    "resolve": resolve,
    "learn": learn,
}


async def audit(desk: HelpDesk, ticket: Ticket, actor: Actor, action: str) -> None:
    """One audit entry for an action on a ticket."""
    # Recorded in the customer's tenant: it is that tenant's support the team gave.
    if desk.team is not None:
        await desk.team.audit(
            ticket.customer_address.tenant,
            actor.agent,
            action,
            f"ticket #{ticket.id}",
            {"conversation": ticket.conversation_id},
        )


async def _take(desk: HelpDesk, ticket: Ticket, actor: Actor) -> bool:
    """Claim a waiting ticket for ``actor``; whether it is theirs now."""
    _, changed = await desk.tickets.transition(
        ticket.id, "human", by=actor.agent, by_name=actor.name, expect=("waiting",)
    )
    if not changed:
        return False
    await audit(desk, ticket, actor, "ticket.claim")
    await desk.joined(ticket, f"claimed:{ticket.id}:{actor.cause}")
    if actor.console:
        await _tell_space(
            desk,
            ticket,
            f"{actor.cause}:claimed",
            say(
                "handoff.console_space_claimed",
                await desk.ticket_language(ticket),
                id=ticket.id,
                agent=actor.name,
            ),
        )
    return True


async def _tell_space(desk: HelpDesk, ticket: Ticket, key: str, text: str) -> bool:
    """A copy for the ticket's thread in the support space; False if queued before.

    Nothing is copied into a space that no longer serves the ticket's tenant."""
    if not await desk.reaches_space(ticket):
        return True
    return await desk.tickets.enqueue(
        key, desk.space_address(ticket), text, kind="to_ticket", ticket_id=ticket.id
    )
