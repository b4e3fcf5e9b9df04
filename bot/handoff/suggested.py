"""What an agent does with a suggested reply: send it as it is, send it
edited, or discard it. Each is one function that the support space's
``/suggest`` command (and its buttons), a reply to the suggestion's message
and the console's buttons all call, so every place writes the same audit
entries and records the same outcome.

Sending relays through the agent reply path (``actions.relay``: signed,
claiming a waiting ticket) under a key derived from the suggestion, not
from the click: a second click, a redelivered event or the console and chat
together relay it once. The outcome is recorded after the relay is queued,
and only the first outcome stands.
"""

from __future__ import annotations

import difflib

from bot.handoff import actions
from bot.handoff.actions import Actor, served
from bot.handoff.desk import HelpDesk
from bot.messages import say
from storage.handoff_repo import Ticket
from storage.suggestions_repo import Suggestion

_OUTCOME_SAID = {
    "sent": "copilot.already_sent",
    "edited": "copilot.already_sent",
    "discarded": "copilot.already_discarded",
    "ignored": "copilot.already_ignored",
    "unsupported": "copilot.nothing_to_send",
}


def changed_share(before: str, after: str) -> float:
    """The share of characters changed from ``before`` to ``after`` (0: none,
    1: all), by the longest matching blocks."""
    if before == after:
        return 0.0
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    kept = sum(block.size for block in matcher.get_matching_blocks())
    return round(1.0 - kept / max(len(before), len(after), 1), 4)


async def _find(
    desk: HelpDesk, ticket: Ticket, wanted: str, language: str = "en"
) -> Suggestion | str:
    """The suggestion numbered ``wanted`` of ``ticket``, or what to tell the agent."""
    if not wanted.isdigit():
        return say("copilot.usage", language)
    suggestion = await desk.tickets.suggestions.get(int(wanted))
    if suggestion is None or suggestion.ticket_id != ticket.id:
        return say("copilot.no_suggestion", language, id=wanted, ticket=ticket.id)
    if suggestion.state != "pending":
        return say(
            _OUTCOME_SAID.get(suggestion.state, "copilot.already_sent"), language, id=suggestion.id
        )
    return suggestion


@served
async def send(desk: HelpDesk, ticket: Ticket, actor: Actor, args: str) -> str:
    """Send suggestion ``args`` to the customer as it is."""
    found = await _find(desk, ticket, args.strip(), actor.language)
    if isinstance(found, str):
        return found
    return await _send(desk, ticket, actor, found, found.text)


@served
async def edit(desk: HelpDesk, ticket: Ticket, actor: Actor, args: str) -> str:
    """``N TEXT``: send ``TEXT`` in place of suggestion N; ``N`` alone: how to edit it here."""
    wanted, _, text = args.strip().partition(" ")
    found = await _find(desk, ticket, wanted, actor.language)
    if isinstance(found, str):
        return found
    text = text.strip()
    if not text:
        return say("copilot.edit_how", actor.language, id=found.id)
    return await _send(desk, ticket, actor, found, text)


@served
async def discard(desk: HelpDesk, ticket: Ticket, actor: Actor, args: str) -> str:
    """Set suggestion ``args`` aside: nothing goes to the customer."""
    found = await _find(desk, ticket, args.strip(), actor.language)
    if isinstance(found, str):
        return found
    if not await desk.tickets.suggestions.decide(
        found.id, "discarded", agent=actor.agent, agent_name=actor.name
    ):
        return say("copilot.already_decided", actor.language, id=found.id)
    await _audit(desk, ticket, actor, "suggestion.discard", found, None)
    return say("copilot.discarded", actor.language, id=found.id)


async def _send(
    desk: HelpDesk, ticket: Ticket, actor: Actor, suggestion: Suggestion, text: str
) -> str:
    if not ticket.open:
        return say(
            "handoff.console_closed" if actor.console else "handoff.already_closed",
            actor.language,
            id=ticket.id,
        )
    changed = changed_share(suggestion.text, text)
    await actions.relay(desk, ticket, actor, text, key=f"suggestion:{suggestion.id}:sent")
    state = "edited" if changed > 0 else "sent"
    decided = await desk.tickets.suggestions.decide(
        suggestion.id,
        state,
        agent=actor.agent,
        agent_name=actor.name,
        sent_text=text,
        changed=changed if state == "edited" else None,
    )
    if not decided:
        return say("copilot.already_decided", actor.language, id=suggestion.id)
    # Any other suggestion still waiting was passed over by this reply.
    await desk.tickets.suggestions.ignore_pending(
        ticket.id, agent=actor.agent, agent_name=actor.name
    )
    await _audit(desk, ticket, actor, f"suggestion.{state}", suggestion, changed)
    if state == "sent":
        return say("copilot.sent", actor.language, id=suggestion.id)
    said = say(
        "copilot.sent_edited", actor.language, id=suggestion.id, percent=round(100 * changed)
    )
    if actor.console or not await desk.reaches_space(ticket):
        return said
    # An edited answer is one click from the knowledge base (today's /learn).
    await desk.tickets.enqueue(
        f"suggestion:{suggestion.id}:learn",
        desk.space_address(ticket),
        said,
        kind="to_ticket",
        ticket_id=ticket.id,
        buttons=((say("copilot.learn_button", actor.language), "/learn"),),
    )
    return ""


async def _audit(
    desk: HelpDesk,
    ticket: Ticket,
    actor: Actor,
    action: str,
    suggestion: Suggestion,
    changed: float | None,
) -> None:
    """One audit entry per outcome, the same from chat and the console."""
    if desk.team is None:
        return
    details: dict[str, object] = {
        "conversation": ticket.conversation_id,
        "ticket": ticket.id,
        "path": suggestion.path,
    }
    if changed is not None:
        details["changed"] = changed
    await desk.team.audit(
        ticket.customer_address.tenant,
        actor.agent,
        action,
        f"suggestion #{suggestion.id}",
        details,
    )


async def reply_to_suggestion(
    desk: HelpDesk, ticket: Ticket, actor: Actor, suggestion: Suggestion, text: str
) -> str:
    """An agent's reply to a suggestion's message: that text, sent in its place."""
    return await edit(desk, ticket, actor, f"{suggestion.id} {text}") or ""


# The console's suggestion buttons, by the name in their URL.
CONSOLE_SUGGESTION_ACTIONS = {"send": send, "edit": edit, "discard": discard}
