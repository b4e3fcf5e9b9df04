"""The help desk: tickets that hand a conversation to people, and both
directions of the relay between a customer and the support space.

The manager calls it in the conversation's own order (under that
conversation's lock), so a ticket opens, gets its relays and closes in the
order the messages arrived. Everything it sends that is not the reply to the
message in hand goes through the outbox, under a key derived from the
inbound event that caused it: a replayed event sends nothing twice.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.handoff.config import HandoffSettings, SupportSpace
from bot.knowledge.passages import Passage
from bot.team import learning
from bot.team.service import RATING_BUTTONS, TICKET_INVITATION, Team
from bot.types import Accepted, ConversationRef, Inbound
from llm.base import ChatMessage
from storage.handoff_repo import HandoffRepository, Ticket
from storage.repository import ConversationAddress, HistoryItem

log = logging.getLogger(__name__)

TRIGGERS = {
    "request": "the customer asked for a person",
    "escalation": "the knowledge base had no reliable answer",
    "model_failure": "the model failed to answer twice in a row",
    "takeover": "an agent took the conversation over",
}
AGENT_COMMANDS = ("claim", "resolve", "release", "note", "tickets", "takeover", "learn")
_PLAIN_COMMAND = re.compile(r"^\s*(claim|resolve|release|note|learn)\b[:\s]*(.*)$", re.I | re.S)

AGENT_HELP = (
    "In the support space: reply in a ticket's topic or thread (or to the ticket message) "
    "to answer its customer; /claim, /resolve, /release, /note TEXT inside a ticket; "
    "/learn (or /learn FAQ-ID) proposes your last answer as an FAQ entry; "
    "/tickets lists the open ones; /takeover N takes conversation N over."
)
NO_TEAM = (
    "There's no support team connected to me yet, so I can't put you through to a "
    "person right now. I've noted your request for the team."
)
ALREADY_OPEN = (
    "You're already in line for a person from the support team; they'll reply here. "
    "Anything you write now goes straight to them."
)


@dataclass(frozen=True, slots=True)
class Opened:
    ticket: Ticket
    created: bool
    notice: str


class HelpDesk:
    def __init__(
        self, *, settings: HandoffSettings, tickets: HandoffRepository, team: Team | None = None
    ) -> None:
        self.settings = settings
        self.tickets = tickets
        # Audit trail, ratings and learned answers; the manager gives its own
        # when none is given here.
        self.team = team

    @property
    def connected(self) -> bool:
        return self.settings.connected

    # -- where a message comes from ----------------------------------------------------

    def space_of(self, inbound: Inbound) -> SupportSpace | None:
        ref = inbound.ref
        return self.settings.space_of(ref.platform, ref.tenant, ref.chat)

    async def open_ticket_of(self, conversation_id: int) -> Ticket | None:
        if not self.connected:
            return None
        return await self.tickets.open_for(conversation_id)

    # -- opening -------------------------------------------------------------------------

    async def open(
        self,
        accepted: Accepted,
        *,
        trigger: str,
        history: Sequence[HistoryItem],
        candidates: Sequence[Passage] = (),
        agent: str = "",
        agent_name: str = "",
    ) -> Opened:
        """Open (or find) the conversation's ticket; the notice tells the customer."""
        inbound = accepted.inbound
        space = self.settings.space_for(inbound.ref.platform, inbound.ref.tenant)
        assert space is not None, "open() needs a connected support space"
        details: dict[str, Any] = {
            "platform": inbound.ref.platform,
            "turns": [{"role": h.role, "text": h.text[:500]} for h in history[-8:]],
            "candidates": [
                {"ref": h.ref, "question": h.title, "score": round(h.dense, 3)} for h in candidates
            ],
            "reason": TRIGGERS.get(trigger, trigger),
        }
        ticket, created = await self.tickets.open_ticket(
            accepted.stored.conversation_id,
            trigger=trigger,
            customer=inbound.platform_user,
            customer_name=inbound.user_name or inbound.user,
            space=space.key,
            space_chat=space.chat,
            details=details,
            agent=agent,
            agent_name=agent_name,
        )
        if not created:
            return Opened(ticket, False, ALREADY_OPEN)
        return Opened(ticket, True, self.opened_notice(datetime.now(UTC)))

    async def take_over(
        self,
        conversation_id: int,
        *,
        customer: str,
        customer_name: str,
        space: SupportSpace,
        agent: str,
        agent_name: str,
        history: Sequence[HistoryItem],
        key: str,
    ) -> tuple[Ticket, bool]:
        """An agent takes a live conversation: a claimed ticket, posted, customer told."""
        ticket, created = await self.tickets.open_ticket(
            conversation_id,
            trigger="takeover",
            customer=customer,
            customer_name=customer_name or customer,
            space=space.key,
            space_chat=space.chat,
            details={
                "platform": customer.partition(":")[0],
                "turns": [{"role": h.role, "text": h.text[:500]} for h in history[-8:]],
                "candidates": [],
                "reason": TRIGGERS["takeover"],
            },
            agent=agent,
            agent_name=agent_name,
        )
        if created:
            await self.post(ticket, "")
            await self._joined(ticket, f"{key}:notice")
        return ticket, created

    def opened_notice(self, now: datetime) -> str:
        text = (
            "I've asked a person from our support team to join this conversation. "
            "They'll reply right here; anything you write now goes straight to them."
        )
        hours = self.settings.hours
        if hours is not None and not hours.is_open(now):
            text += f" Our team is in {hours.text}, so the answer may come when they are back."
        return text

    async def post(self, ticket: Ticket, summary: str) -> None:
        """Queue the ticket for its support space (once per ticket)."""
        if summary:
            await self.tickets.set_summary(ticket.id, summary)
        space = self._space(ticket)
        await self.tickets.enqueue(
            f"ticket:{ticket.id}",
            ConversationAddress(space.platform, space.tenant, space.chat),
            ticket_text(ticket, summary),
            kind="ticket",
            ticket_id=ticket.id,
        )

    def summary_messages(self, history: Sequence[HistoryItem]) -> list[ChatMessage]:
        """What the model is asked for the ticket's case summary."""
        lines = [
            f"{'Customer' if h.role == 'user' else 'Assistant'}: {h.text[:600]}"
            for h in history[-12:]
        ]
        return [
            ChatMessage(
                "system",
                "You summarise support conversations for the human agent who takes over. "
                "Write two or three plain sentences: what the customer wants and what was "
                "already tried. Do not address the customer.",
            ),
            ChatMessage("user", "\n".join(lines) or "(no messages yet)"),
        ]

    # -- the customer's side ------------------------------------------------------------

    async def from_customer(self, accepted: Accepted, ticket: Ticket) -> None:
        """Relay a customer's message into their ticket (the model is not asked)."""
        inbound = accepted.inbound
        name = ticket.customer_name or inbound.user_name or "Customer"
        if accepted.text:
            text = f"{name}: {accepted.text}"
        else:
            what = str(inbound.meta.get("attachment") or "a message without text")
            text = f"{name} sent {what}, which I can't relay here. Ask them to describe it."
        await self.tickets.enqueue(
            f"relay:{accepted.inbound_id}",
            self.space_address(ticket),
            text,
            kind="to_ticket",
            ticket_id=ticket.id,
        )
        await self.tickets.note(ticket.id, "from_customer", inbound.platform_user, accepted.text)

    # -- the support space's side -------------------------------------------------------

    async def from_space(self, accepted: Accepted, space: SupportSpace) -> str | None:
        """Handle a message written in the support space.

        Returns the reply for the agent, or None to stay silent (a relayed
        answer, or agents talking among themselves).
        """
        inbound = accepted.inbound
        command = accepted.command
        ticket = await self._ticket_in_space(inbound)
        if command is None and ticket is not None:
            plain = _PLAIN_COMMAND.match(accepted.text)
            if plain is not None:
                command = (plain.group(1).lower(), plain.group(2).strip())
        if command is not None and command[0] == "tickets":
            return await self.list_tickets(space)
        if command is not None and command[0] == "takeover":
            return None  # handled by the manager, which owns the conversations
        if command is not None and command[0] in AGENT_COMMANDS:
            if ticket is None:
                return (
                    f"/{command[0]} works inside a ticket: in its topic or thread, or as a "
                    "reply to the ticket message. /tickets lists the open ones."
                )
            return await self._agent_command(accepted, ticket, *command)
        if ticket is None:
            return None
        if not ticket.open:
            return (
                f"Ticket #{ticket.id} is closed and the bot answers this customer again. "
                f"/takeover {ticket.conversation_id} takes the conversation back."
            )
        if not accepted.text:
            what = str(inbound.meta.get("attachment") or "that message")
            return f"I can only relay text to the customer; {what} was not sent."
        if ticket.state == "waiting":
            await self._claim(accepted, ticket)
        await self.tickets.enqueue(
            f"relay:{accepted.inbound_id}",
            ticket.customer_address,
            f"{self.settings.signature}: {accepted.text}",
            kind="to_customer",
            ticket_id=ticket.id,
        )
        await self.tickets.note(ticket.id, "to_customer", inbound.platform_user, accepted.text)
        return None

    async def _agent_command(self, accepted: Accepted, ticket: Ticket, name: str, args: str) -> str:
        agent = accepted.inbound.platform_user
        if name == "learn":
            if self.team is None:
                return "Learning answers needs the knowledge base, which is not set up here."
            return await learning.learn(self.team, self.tickets, ticket, agent, args)
        if name == "note":
            if not args:
                return "Write the note after the command: /note TEXT (never sent to the customer)."
            await self.tickets.note(ticket.id, "note", agent, args)
            return f"Noted on ticket #{ticket.id}; the customer does not see notes."
        if not ticket.open:
            return f"Ticket #{ticket.id} is already closed."
        if name == "claim":
            if ticket.state == "human":
                if ticket.agent == agent:
                    return f"You already have ticket #{ticket.id}."
                return f"Ticket #{ticket.id} is with {ticket.agent_name or ticket.agent}."
            await self._claim(accepted, ticket)
            return f"Ticket #{ticket.id} is yours; replies here go to the customer."
        if name == "release":
            _, changed = await self.tickets.transition(
                ticket.id, "waiting", by=agent, expect=("human",)
            )
            if not changed:
                return f"Ticket #{ticket.id} is not claimed."
            await self._audit(ticket, agent, "ticket.release")
            return f"Ticket #{ticket.id} is waiting again for someone to claim it."
        # resolve
        _, changed = await self.tickets.transition(ticket.id, "closed", by=agent, reason="resolved")
        if not changed:
            return f"Ticket #{ticket.id} is already closed."
        await self._audit(ticket, agent, "ticket.resolve")
        text = (
            "The support team marked this conversation as resolved, and I'm back to help. "
            "Send /human whenever you'd like a person again."
        )
        buttons: tuple[tuple[str, str], ...] = ()
        if self.team is not None and self.team.rates_tickets:
            await self.team.repository.invite_rating(
                tenant=ticket.customer_address.tenant,
                conversation_id=ticket.conversation_id,
                user_id=ticket.customer,
                question=await learning.ticket_question(self.tickets, ticket),
                ticket_id=ticket.id,
            )
            text += "\n\n" + TICKET_INVITATION
            buttons = RATING_BUTTONS
        await self.tickets.enqueue(
            f"resolved:{ticket.id}",
            ticket.customer_address,
            text,
            kind="notice",
            ticket_id=ticket.id,
            buttons=buttons,
        )
        return f"Resolved ticket #{ticket.id}; the bot answers this customer again."

    async def _claim(self, accepted: Accepted, ticket: Ticket) -> None:
        inbound = accepted.inbound
        _, changed = await self.tickets.transition(
            ticket.id,
            "human",
            by=inbound.platform_user,
            by_name=inbound.user_name,
            expect=("waiting",),
        )
        if changed:
            await self._audit(ticket, inbound.platform_user, "ticket.claim")
            await self._joined(ticket, f"claimed:{ticket.id}:{accepted.inbound_id}")

    async def list_tickets(self, space: SupportSpace) -> str:
        found = await self.tickets.open_tickets(space_chat=space.chat)
        now = datetime.now(UTC)
        lines = ["Open tickets:"] if found else ["No open tickets."]
        for t in found:
            waited = int((now - t.created_at).total_seconds() // 60)
            who = f", with {t.agent_name or t.agent}" if t.state == "human" else ""
            lines.append(
                f"#{t.id} {t.state}{who} · {waited} min · {t.customer_address.platform} · "
                f"{t.customer_name} · conversation {t.conversation_id}"
            )
        recent = await self.tickets.recent_conversations(
            exclude_chats=[s.chat for s in self.settings.spaces]
        )
        if recent:
            lines.append("Recent conversations (/takeover N):")
            for number, address, name, when in recent:
                ago = int((now - when).total_seconds() // 60)
                lines.append(f"{number} · {address.platform} · {name or '?'} · {ago} min ago")
        return "\n".join(lines)

    async def close_idle(self, ticket: Ticket) -> bool:
        _, changed = await self.tickets.transition(
            ticket.id, "closed", by="deskmate", reason="idle"
        )
        if not changed:
            return False
        await self.tickets.enqueue(
            f"idle:{ticket.id}",
            ticket.customer_address,
            "This conversation with the support team has been quiet for a while, so I'm "
            "back to help. Send /human whenever you'd like a person again.",
            kind="notice",
            ticket_id=ticket.id,
        )
        await self.tickets.enqueue(
            f"idle-space:{ticket.id}",
            self.space_address(ticket),
            f"Ticket #{ticket.id} closed after a quiet spell; the bot answers this customer again.",
            kind="to_ticket",
            ticket_id=ticket.id,
        )
        return True

    async def abandon(self, ticket_id: int, error: str) -> None:
        """Close a ticket that could not be posted, and tell the customer so."""
        ticket, changed = await self.tickets.transition(
            ticket_id, "closed", by="deskmate", reason="undeliverable"
        )
        if not changed or ticket is None:
            return
        log.error("ticket #%s could not reach its support space: %s", ticket_id, error)
        await self.tickets.enqueue(
            f"abandoned:{ticket_id}",
            ticket.customer_address,
            "Sorry, I couldn't reach the support team just now, so I'm back to help. "
            "Please try /human again in a little while.",
            kind="notice",
            ticket_id=ticket_id,
        )

    async def remind(self, ticket: Ticket, at: datetime) -> None:
        waited = int((at - ticket.created_at).total_seconds() // 60)
        await self.tickets.enqueue(
            f"remind:{ticket.id}:{at.isoformat(timespec='seconds')}",
            self.space_address(ticket),
            f"Ticket #{ticket.id} ({ticket.customer_name}) has waited {waited} min for a "
            "person. Reply here, or /claim it.",
            kind="to_ticket",
            ticket_id=ticket.id,
        )

    # -- the operator console -------------------------------------------------------
    # Each console action carries an id the page made up when it was drawn; every
    # message it causes is queued under a key derived from that id, so a double
    # submit (or a retried request) changes and relays nothing twice.

    async def console_claim(
        self, ticket_id: int, *, agent: str, agent_name: str, action: str
    ) -> str:
        ticket = await self.tickets.get(ticket_id)
        if ticket is None:
            return f"There is no ticket #{ticket_id}."
        if ticket.state == "human":
            return f"Ticket #{ticket.id} is with {ticket.agent_name or ticket.agent}."
        if not await self._console_claim(ticket, agent, agent_name, action):
            return f"Ticket #{ticket.id} was claimed or closed meanwhile."
        return f"Ticket #{ticket.id} is yours; replies from here go to the customer."

    async def console_reply(
        self, ticket_id: int, *, agent: str, agent_name: str, text: str, action: str
    ) -> str:
        ticket = await self.tickets.get(ticket_id)
        if ticket is None:
            return f"There is no ticket #{ticket_id}."
        if not ticket.open:
            return f"Ticket #{ticket.id} is closed; the bot answers this customer again."
        text = text.strip()
        if not text:
            return "Write the reply first."
        if ticket.state == "waiting":
            await self._console_claim(ticket, agent, agent_name, action)
        queued = await self.tickets.enqueue(
            f"console:{action}",
            ticket.customer_address,
            f"{self.settings.signature}: {text}",
            kind="to_customer",
            ticket_id=ticket.id,
        )
        if not queued:
            return f"That reply to ticket #{ticket.id} was already sent."
        await self.tickets.note(ticket.id, "to_customer", agent, text)
        await self.tickets.enqueue(
            f"console:{action}:space",
            self.space_address(ticket),
            f"{agent_name} (console) replied: {text}",
            kind="to_ticket",
            ticket_id=ticket.id,
        )
        return f"Reply queued for the customer of ticket #{ticket.id}."

    async def console_note(
        self, ticket_id: int, *, agent: str, agent_name: str, text: str, action: str
    ) -> str:
        ticket = await self.tickets.get(ticket_id)
        if ticket is None:
            return f"There is no ticket #{ticket_id}."
        text = text.strip()
        if not text:
            return "Write the note first."
        # The copy for the support space doubles as the note's idempotency key.
        if not await self.tickets.enqueue(
            f"console:{action}:note",
            self.space_address(ticket),
            f"Note from {agent_name} (console): {text}",
            kind="to_ticket",
            ticket_id=ticket.id,
        ):
            return f"That note on ticket #{ticket.id} was already added."
        await self.tickets.note(ticket.id, "note", agent, text)
        return f"Noted on ticket #{ticket.id}; the customer does not see notes."

    async def console_release(self, ticket_id: int, *, agent: str, agent_name: str) -> str:
        _, changed = await self.tickets.transition(
            ticket_id, "waiting", by=agent, by_name=agent_name, expect=("human",)
        )
        if not changed:
            return f"Ticket #{ticket_id} is not claimed."
        return f"Ticket #{ticket_id} is waiting again for someone to claim it."

    async def console_resolve(
        self, ticket_id: int, *, agent: str, agent_name: str, action: str
    ) -> str:
        ticket, changed = await self.tickets.transition(
            ticket_id, "closed", by=agent, by_name=agent_name, reason="resolved"
        )
        if ticket is None:
            return f"There is no ticket #{ticket_id}."
        if not changed:
            return f"Ticket #{ticket_id} is already closed."
        await self.tickets.enqueue(
            f"resolved:{ticket.id}",
            ticket.customer_address,
            "The support team marked this conversation as resolved, and I'm back to help. "
            "Send /human whenever you'd like a person again.",
            kind="notice",
            ticket_id=ticket.id,
        )
        await self.tickets.enqueue(
            f"console:{action}:space",
            self.space_address(ticket),
            f"Ticket #{ticket.id} resolved by {agent_name} (console); the bot answers this "
            "customer again.",
            kind="to_ticket",
            ticket_id=ticket.id,
        )
        return f"Resolved ticket #{ticket.id}; the bot answers this customer again."

    async def _console_claim(
        self, ticket: Ticket, agent: str, agent_name: str, action: str
    ) -> bool:
        _, changed = await self.tickets.transition(
            ticket.id, "human", by=agent, by_name=agent_name, expect=("waiting",)
        )
        if changed:
            await self._joined(ticket, f"claimed:{ticket.id}:console:{action}")
            await self.tickets.enqueue(
                f"console:{action}:claimed",
                self.space_address(ticket),
                f"Ticket #{ticket.id} claimed by {agent_name} (console).",
                kind="to_ticket",
                ticket_id=ticket.id,
            )
        return changed or ticket.state == "human"

    # -- helpers -------------------------------------------------------------------------

    async def _joined(self, ticket: Ticket, key: str) -> None:
        """Tell the customer a person has their conversation now."""
        await self.tickets.enqueue(
            key,
            ticket.customer_address,
            f"A person from the support team ({self.settings.signature}) has joined "
            "the conversation.",
            kind="notice",
            ticket_id=ticket.id,
        )

    async def _audit(self, ticket: Ticket, agent: str, action: str) -> None:
        # Recorded in the customer's tenant: it is that tenant's support the team gave.
        if self.team is not None:
            await self.team.audit(
                ticket.customer_address.tenant,
                agent,
                action,
                f"ticket #{ticket.id}",
                {"conversation": ticket.conversation_id},
            )

    async def _ticket_in_space(self, inbound: Inbound) -> Ticket | None:
        reply_to = str(inbound.meta.get("reply_to") or "")
        return await self.tickets.in_space(
            inbound.ref.chat, thread=inbound.ref.thread, reply_to=reply_to
        )

    def _space(self, ticket: Ticket) -> SupportSpace:
        for space in self.settings.spaces:
            if space.key == ticket.space:
                return space
        # Configured away since: the chat it lives in still works for its relays.
        platform, _, rest = ticket.space.partition(":")
        tenant = rest.partition("/")[0] if "/" in rest else ""
        return SupportSpace(platform, ticket.space_chat, tenant)

    def space_address(self, ticket: Ticket) -> ConversationAddress:
        # The thread is read from the ticket when the row is sent: the ticket
        # may not be posted yet when a customer's message is queued for it.
        space = self._space(ticket)
        return ConversationAddress(space.platform, space.tenant, space.chat)


def ticket_text(ticket: Ticket, summary: str) -> str:
    details = ticket.details
    lines = [
        f"Ticket #{ticket.id} · {details.get('platform', '?')} · {ticket.customer_name}"
        f" · conversation {ticket.conversation_id}",
        f"Why: {details.get('reason') or TRIGGERS.get(ticket.trigger, ticket.trigger)}",
    ]
    if ticket.state == "human" and ticket.agent:
        lines.append(f"Taken over by {ticket.agent_name or ticket.agent}")
    if summary:
        lines.append(f"Summary: {summary}")
    turns = details.get("turns") or []
    if turns:
        lines.append("Last messages:")
        for turn in turns[-6:]:
            who = "customer" if turn.get("role") == "user" else "bot"
            lines.append(f"  {who}: {str(turn.get('text', ''))[:300]}")
    candidates = details.get("candidates") or []
    if candidates:
        lines.append("Knowledge base considered:")
        for c in candidates:
            lines.append(f"  {c['ref']} ({c['score']:.2f}) {c['question']}")
    lines.append("Reply here to answer the customer. /claim · /resolve · /release · /note TEXT")
    return "\n".join(lines)


def space_ref(address: ConversationAddress) -> ConversationRef:
    return ConversationRef(address.platform, address.tenant, address.chat, address.thread)
