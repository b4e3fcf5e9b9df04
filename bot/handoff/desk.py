"""The help desk: tickets that hand a conversation to people, the customer's
side of the relay, the support space's ticket list, and the notices of the
ticket clocks. What agents do with a ticket (claim, reply, note, release,
resolve, learn) is in ``bot.handoff.actions``, shared by chat and console.

The manager calls it in the conversation's own order (under that
conversation's lock), so a ticket opens, gets its relays and closes in the
order the messages arrived. Everything it sends that is not the reply to the
message in hand goes through the outbox, under a key derived from the
inbound event that caused it: a replayed event sends nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.handoff.config import HandoffSettings, SupportSpace
from bot.handoff.live import LiveEdits
from bot.handoff.spaces import Spaces
from bot.knowledge.passages import Passage
from bot.language import SUPPORTED_LANGUAGES, Languages
from bot.messages import say
from bot.team.service import Team
from bot.types import Accepted, ConversationRef, Inbound
from llm.base import ChatMessage
from storage.handoff_repo import HandoffRepository, Ticket
from storage.repository import ConversationAddress, HistoryItem

log = logging.getLogger(__name__)

TRIGGERS = {
    trigger: say(f"handoff.why.{trigger}")
    for trigger in ("request", "escalation", "model_failure", "takeover")
}
NO_TEAM = say("handoff.no_team")
NO_DESK = say("handoff.no_desk")
ALREADY_OPEN = say("handoff.already_open")
# The ticket list offers this many recent conversations of the tenants the
# space serves, found among the latest conversations of every tenant.
RECENT_LISTED = 10
RECENT_SCANNED = 500


@dataclass(frozen=True, slots=True)
class Opened:
    ticket: Ticket
    created: bool
    notice: str


class HelpDesk:
    def __init__(
        self,
        *,
        settings: HandoffSettings,
        tickets: HandoffRepository,
        team: Team | None = None,
        spaces: Spaces | None = None,
    ) -> None:
        self.spaces = spaces or Spaces(settings, tickets.desks)
        self.settings = settings
        self.tickets = tickets
        # Audit trail, ratings and learned answers; the manager gives its own
        # when none is given here.
        self.team = team
        # Where a suggestion streams into the ticket's thread as the model
        # writes it (the outbox worker sets itself; None: posted when done).
        self.live: LiveEdits | None = None
        # The agents' language: a tenant's own (`/language`, when the manager
        # gives ``languages``), else the deployment's ``DESKMATE_LANGUAGE``.
        self.language = "en"
        self.languages: Languages | None = None

    @property
    def settings(self) -> HandoffSettings:
        return self.spaces.settings

    @settings.setter
    def settings(self, settings: HandoffSettings) -> None:
        self.spaces.settings = settings

    @property
    def connected(self) -> bool:
        """Whether the help desk is on (the environment lists a support space)."""
        return self.settings.connected

    async def agents_language(self, space: SupportSpace) -> str:
        """The language ``space``'s agents are written to: its tenant's
        ``/language``, else the deployment's (never a customer's)."""
        if self.languages is not None:
            own = await self.languages.of_tenant(space.platform, space.tenant)
            if own in SUPPORTED_LANGUAGES:
                return str(own)
        return self.language

    async def ticket_language(self, ticket: Ticket) -> str:
        """The language of the agents of ``ticket``'s support space."""
        return await self.agents_language(self._space(ticket))

    # -- where a message comes from ----------------------------------------------------

    async def space_of(self, inbound: Inbound) -> SupportSpace | None:
        ref = inbound.ref
        return await self.spaces.of_chat(ref.platform, ref.tenant, ref.chat)

    def listens_to(self, ref: ConversationRef) -> bool:
        """Whether a chat is a support space (every message there is for the desk)."""
        return self.connected and self.spaces.listens(ref.platform, ref.tenant, ref.chat)

    async def space_for(self, inbound: Inbound) -> SupportSpace | None:
        """Where this customer's ticket goes; None: no person can be reached for them."""
        if not self.connected:
            return None
        ref = inbound.ref
        return await self.spaces.for_tenant(ref.platform, ref.tenant)

    async def serves(self, space: SupportSpace, customer: ConversationAddress) -> bool:
        """Whether ``space`` serves the tenant of a customer's conversation."""
        return await self.spaces.serves(space, customer.platform, customer.tenant)

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
        space: SupportSpace,
        candidates: Sequence[Passage] = (),
        agent: str = "",
        agent_name: str = "",
    ) -> Opened:
        """Open (or find) the conversation's ticket in ``space`` (the space that
        serves the customer); the notice tells the customer."""
        inbound = accepted.inbound
        details: dict[str, Any] = {
            "platform": inbound.ref.platform,
            "turns": [{"role": h.role, "text": h.text[:500]} for h in history[-8:]],
            "candidates": [
                {"ref": h.ref, "question": h.title, "score": round(h.dense, 3)} for h in candidates
            ],
            "reason": TRIGGERS.get(trigger, trigger),
            # The customer's language: the ticket shows it, and the notices
            # sent to the customer later are written in it.
            "language": accepted.language,
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
            return Opened(ticket, False, say("handoff.already_open", accepted.language))
        return Opened(ticket, True, self.opened_notice(datetime.now(UTC), accepted.language))

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
            await self.joined(ticket, f"{key}:notice")
        return ticket, created

    def opened_notice(self, now: datetime, language: str = "en") -> str:
        text = say("handoff.opened", language)
        hours = self.settings.hours
        if hours is not None and not hours.is_open(now):
            text += say("handoff.opened_after_hours", language, hours=hours.text)
        return text

    async def post(self, ticket: Ticket, summary: str) -> None:
        """Queue the ticket for its support space (once per ticket)."""
        if summary:
            await self.tickets.set_summary(ticket.id, summary)
        space = self._space(ticket)
        await self.tickets.enqueue(
            f"ticket:{ticket.id}",
            ConversationAddress(space.platform, space.tenant, space.chat),
            ticket_text(ticket, summary, await self.agents_language(space)),
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
        """Relay a customer's message into their ticket (the model is not asked).

        A ticket left in a space that no longer serves the customer's tenant
        keeps the message on the ticket only, for the console."""
        inbound = accepted.inbound
        if not await self.reaches_space(ticket):
            await self.tickets.note(
                ticket.id, "from_customer", inbound.platform_user, accepted.text
            )
            return
        language = await self.ticket_language(ticket)
        name = (
            ticket.customer_name
            or inbound.user_name
            or say("handoff.customer_default_name", language)
        )
        if accepted.text:
            text = say("handoff.customer_said", language, name=name, text=accepted.text)
        else:
            what = str(inbound.meta.get("attachment") or say("handoff.no_text", language))
            text = say("handoff.customer_sent", language, name=name, what=what)
        await self.tickets.enqueue(
            f"relay:{accepted.inbound_id}",
            self.space_address(ticket),
            text,
            kind="to_ticket",
            ticket_id=ticket.id,
        )
        await self.tickets.note(ticket.id, "from_customer", inbound.platform_user, accepted.text)

    # -- the support space's side -------------------------------------------------------

    async def ticket_in_space(self, inbound: Inbound) -> Ticket | None:
        """The ticket whose topic or thread a support-space message is in (or
        whose ticket message, or a relayed message of, it replies to)."""
        # A button pressed on a ticket's message (a suggestion's Send in a group
        # without topics) belongs to that message's ticket, as a reply to it would.
        reply_to = str(inbound.meta.get("reply_to") or inbound.meta.get("pressed") or "")
        return await self.tickets.in_space(
            inbound.ref.chat, thread=inbound.ref.thread, reply_to=reply_to
        )

    def not_relayable(self, accepted: Accepted, ticket: Ticket) -> str | None:
        """Why an agent's message in an open ticket cannot reach its customer."""
        if not ticket.open or accepted.text:
            return None
        language = accepted.language
        what = str(accepted.inbound.meta.get("attachment") or say("handoff.that_message", language))
        return say("handoff.text_only", language, what=what)

    async def list_tickets(self, space: SupportSpace) -> str:
        """The space's open tickets and the recent conversations it may take
        over, of the tenants it serves only."""
        serves = await self.spaces.serving(space)
        found = [
            t
            for t in await self.tickets.open_tickets(space_chat=space.chat)
            if serves(t.customer_address.platform, t.customer_address.tenant)
        ]
        now = datetime.now(UTC)
        language = await self.agents_language(space)
        lines = [say("handoff.tickets_open" if found else "handoff.tickets_none", language)]
        for t in found:
            waited = int((now - t.created_at).total_seconds() // 60)
            agent = t.agent_name or t.agent
            who = say("handoff.tickets_with", language, agent=agent) if t.state == "human" else ""
            lines.append(
                say(
                    "handoff.tickets_line",
                    language,
                    id=t.id,
                    state=t.state,
                    who=who,
                    minutes=waited,
                    platform=t.customer_address.platform,
                    customer=t.customer_name,
                    conversation=t.conversation_id,
                )
            )
        recent = [
            (number, address, name, when)
            for number, address, name, when in await self.tickets.recent_conversations(
                limit=RECENT_SCANNED, exclude_chats=[s.chat for s in self.settings.spaces]
            )
            if serves(address.platform, address.tenant)
            and not self.spaces.chat_of_space(address.platform, address.chat)
        ][:RECENT_LISTED]
        if recent:
            lines.append(say("handoff.tickets_recent", language))
            for number, address, name, when in recent:
                ago = int((now - when).total_seconds() // 60)
                lines.append(
                    say(
                        "handoff.tickets_recent_line",
                        language,
                        number=number,
                        platform=address.platform,
                        name=name or "?",
                        minutes=ago,
                    )
                )
        return "\n".join(lines)

    async def close_idle(self, ticket: Ticket) -> bool:
        _, changed = await self.tickets.transition(
            ticket.id, "closed", by="deskmate", reason="idle"
        )
        if not changed:
            return False
        await self.tickets.suggestions.ignore_pending(ticket.id)
        await self.tickets.enqueue(
            f"idle:{ticket.id}",
            ticket.customer_address,
            say("handoff.idle_notice", customer_language(ticket)),
            kind="notice",
            ticket_id=ticket.id,
        )
        await self.tickets.enqueue(
            f"idle-space:{ticket.id}",
            self.space_address(ticket),
            say("handoff.idle_space", await self.ticket_language(ticket), id=ticket.id),
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
            say("handoff.abandoned", customer_language(ticket)),
            kind="notice",
            ticket_id=ticket_id,
        )

    async def remind(self, ticket: Ticket, at: datetime) -> None:
        if not await self.reaches_space(ticket):
            return  # the customer's name stays out of a space that does not serve them
        waited = int((at - ticket.created_at).total_seconds() // 60)
        language = await self.ticket_language(ticket)
        await self.tickets.enqueue(
            f"remind:{ticket.id}:{at.isoformat(timespec='seconds')}",
            self.space_address(ticket),
            say(
                "handoff.remind",
                language,
                id=ticket.id,
                customer=ticket.customer_name,
                minutes=waited,
            ),
            kind="to_ticket",
            ticket_id=ticket.id,
        )

    # -- helpers -------------------------------------------------------------------------

    async def joined(self, ticket: Ticket, key: str) -> None:
        """Tell the customer a person has their conversation now."""
        await self.tickets.enqueue(
            key,
            ticket.customer_address,
            say("handoff.joined", customer_language(ticket), signature=self.settings.signature),
            kind="notice",
            ticket_id=ticket.id,
        )

    async def reaches_space(self, ticket: Ticket) -> bool:
        """Whether the ticket's support space still serves its customer's tenant
        (the settings or the tenant's choice may have changed since it opened)."""
        return await self.serves(self._space(ticket), ticket.customer_address)

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


def customer_language(ticket: Ticket) -> str:
    """The language the ticket's customer is written to in (English for a
    ticket opened before languages were kept)."""
    return str(ticket.details.get("language") or "en")


def ticket_text(ticket: Ticket, summary: str, language: str = "en") -> str:
    """The ticket's post in its support space, in the agents' ``language``."""
    details = ticket.details
    reason = details.get("reason") or ""
    # The reason is stored as said when the ticket opened: a trigger's own
    # reason is said again in the agents' language.
    trigger = next((t for t, said in TRIGGERS.items() if said == reason), None)
    if not reason:
        trigger = ticket.trigger if ticket.trigger in TRIGGERS else None
        reason = ticket.trigger
    if trigger is not None:
        reason = say(f"handoff.why.{trigger}", language)
    lines = [
        say(
            "handoff.ticket_head",
            language,
            id=ticket.id,
            platform=details.get("platform", "?"),
            customer=ticket.customer_name,
            conversation=ticket.conversation_id,
        ),
        say("handoff.ticket_why", language, reason=reason),
    ]
    customer = details.get("language")
    if customer:
        name = SUPPORTED_LANGUAGES.get(customer, customer)
        lines.append(say("handoff.ticket_language", language, language=name, code=customer))
    if ticket.state == "human" and ticket.agent:
        lines.append(say("handoff.ticket_taken", language, agent=ticket.agent_name or ticket.agent))
    if summary:
        lines.append(say("handoff.ticket_summary", language, summary=summary))
    turns = details.get("turns") or []
    if turns:
        lines.append(say("handoff.ticket_turns", language))
        for turn in turns[-6:]:
            who = say(
                "handoff.ticket_customer" if turn.get("role") == "user" else "handoff.ticket_bot",
                language,
            )
            lines.append(
                say("handoff.ticket_turn", language, who=who, text=str(turn.get("text", ""))[:300])
            )
    candidates = details.get("candidates") or []
    if candidates:
        lines.append(say("handoff.ticket_candidates", language))
        for c in candidates:
            lines.append(
                say(
                    "handoff.ticket_candidate",
                    language,
                    ref=c["ref"],
                    score=c["score"],
                    question=c["question"],
                )
            )
    lines.append(say("handoff.ticket_foot", language))
    return "\n".join(lines)
