"""Tickets and the outbox: the human handoff's storage.

A conversation's handoff state is its open ticket (``waiting``: nobody has
it yet, ``human``: an agent claimed it); with none open, the bot answers. A
partial unique index keeps one open ticket per conversation, so two workers
opening one at once get the same ticket.

The outbox holds every message that is not a reply — relays both ways,
notices, ticket posts, reminders — until the worker has sent it. Each row has
a unique ``key`` derived from what caused it (the inbound event it relays,
the ticket and transition it announces), so replaying the cause never
enqueues it twice, and a row is claimed with a lease before it is sent, so
two workers never send the same one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, and_, case, delete, false, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from storage import outbox_doubts
from storage.addresses import ConversationAddress
from storage.db import Database, as_utc, utcnow
from storage.desks_repo import DeskRepository
from storage.handoff_forget import forget_in_others_tickets
from storage.models import conversations, inbound_events, outbox, ticket_events, tickets
from storage.outbox_doubts import Queued, Resent
from storage.sql import ADDRESS_COLUMNS, Store, address_of
from storage.suggestions_repo import SuggestionRepository, forget_suggestions

TicketState = Literal["waiting", "human", "closed"]
OPEN_STATES = ("waiting", "human")


@dataclass(frozen=True, slots=True)
class Ticket:
    id: int
    conversation_id: int
    state: str
    trigger: str
    customer: str
    customer_name: str
    summary: str
    details: dict[str, Any]
    agent: str
    agent_name: str
    space: str
    space_chat: str
    space_thread: str
    space_message: str
    close_reason: str
    created_at: datetime
    claimed_at: datetime | None
    first_reply_at: datetime | None
    last_activity_at: datetime
    reminded_at: datetime | None
    closed_at: datetime | None
    # The customer's conversation.
    customer_address: ConversationAddress = field(
        default_factory=lambda: ConversationAddress("", "", "")
    )

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def posted(self) -> bool:
        """Whether the ticket is in its support space yet (agents can answer it)."""
        return bool(self.space_thread or self.space_message)


@dataclass(frozen=True, slots=True)
class TicketEvent:
    kind: str
    author: str
    text: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    key: str
    kind: str
    ticket_id: int | None
    address: ConversationAddress
    text: str
    attempts: int
    # (label, command) pairs a platform may show as buttons; the text already
    # says how to do the same by typing.
    buttons: tuple[tuple[str, str], ...] = ()


class HandoffRepository(Store):
    """Async storage of tickets and the outbox; every method is one transaction."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.worker = uuid.uuid4().hex
        self._single_process = db.dialect == "sqlite"
        # Called after a row is queued (the outbox worker's wake-up), so a relay
        # does not wait for the worker's next look.
        self.on_enqueue: Callable[[], None] | None = None
        # Which support space each tenant chose for itself.
        self.desks = DeskRepository(db)
        # Replies suggested to the agents of each ticket, and their outcomes.
        self.suggestions = SuggestionRepository(db)

    # -- tickets -------------------------------------------------------------------

    async def open_ticket(
        self,
        conversation_id: int,
        *,
        trigger: str,
        customer: str,
        customer_name: str,
        space: str,
        space_chat: str,
        details: dict[str, Any],
        agent: str = "",
        agent_name: str = "",
    ) -> tuple[Ticket, bool]:
        """The conversation's open ticket, opened now unless one is; and whether it is new.

        With ``agent`` the ticket opens claimed (a takeover).
        """
        now = utcnow()

        def op(conn: Connection) -> tuple[Ticket, bool]:
            found = _open_ticket(conn, conversation_id)
            if found is not None:
                return found, False
            try:
                with conn.begin_nested():
                    ticket_id = conn.execute(
                        tickets.insert()
                        .values(
                            conversation_id=conversation_id,
                            state="human" if agent else "waiting",
                            trigger=trigger,
                            customer=customer,
                            customer_name=customer_name,
                            details=details,
                            agent=agent,
                            agent_name=agent_name,
                            space=space,
                            space_chat=space_chat,
                            created_at=now,
                            claimed_at=now if agent else None,
                            last_activity_at=now,
                        )
                        .returning(tickets.c.id)
                    ).scalar_one()
                    _event(conn, ticket_id, "opened", agent or customer, trigger, now)
            except IntegrityError:
                # Another worker opened it between our read and our insert.
                found = _open_ticket(conn, conversation_id)
                assert found is not None
                return found, False
            ticket = _ticket(conn, ticket_id)
            assert ticket is not None
            return ticket, True

        return await self._run("open a ticket", op)

    async def open_for(self, conversation_id: int) -> Ticket | None:
        return await self._run(
            "read the handoff state", lambda conn: _open_ticket(conn, conversation_id)
        )

    async def get(self, ticket_id: int) -> Ticket | None:
        return await self._run("read a ticket", lambda conn: _ticket(conn, ticket_id))

    async def in_space(
        self, space_chat: str, *, thread: str = "", reply_to: str = ""
    ) -> Ticket | None:
        """The ticket a support-space message belongs to: by its topic or thread,
        or (a group without topics) by the ticket message it replies to. The
        newest ticket wins, open or not, so a late reply still finds its ticket."""

        def op(conn: Connection) -> Ticket | None:
            wanted = []
            if thread:
                wanted.append(tickets.c.space_thread == thread)
            if reply_to:
                wanted.append(tickets.c.space_message == reply_to)
            if not wanted:
                return None
            row_id = conn.execute(
                select(tickets.c.id)
                .where(tickets.c.space_chat == space_chat, or_(*wanted))
                .order_by(tickets.c.id.desc())
                .limit(1)
            ).scalar()
            if row_id is None and reply_to:
                # A reply to a customer's message relayed into the group.
                row_id = conn.execute(
                    select(outbox.c.ticket_id)
                    .where(outbox.c.chat == space_chat, outbox.c.sent_message == reply_to)
                    .order_by(outbox.c.id.desc())
                    .limit(1)
                ).scalar()
            return _ticket(conn, row_id) if row_id is not None else None

        return await self._run("find a ticket", op)

    async def set_posted(self, ticket_id: int, *, thread: str, message: str) -> None:
        def op(conn: Connection) -> None:
            conn.execute(
                update(tickets)
                .where(tickets.c.id == ticket_id)
                .values(space_thread=thread, space_message=message)
            )

        await self._run("record where a ticket was posted", op)

    async def set_summary(self, ticket_id: int, summary: str) -> None:
        await self._run(
            "store a ticket's summary",
            lambda conn: conn.execute(
                update(tickets).where(tickets.c.id == ticket_id).values(summary=summary)
            ),
        )

    async def transition(
        self,
        ticket_id: int,
        to: TicketState,
        *,
        by: str,
        by_name: str = "",
        reason: str = "",
        expect: Sequence[str] = OPEN_STATES,
    ) -> tuple[Ticket | None, bool]:
        """Move a ticket from one of ``expect`` to ``to``; returns it and whether it moved."""
        now = utcnow()

        def op(conn: Connection) -> tuple[Ticket | None, bool]:
            values: dict[str, Any] = {"state": to, "last_activity_at": now}
            if to == "human":
                values.update(agent=by, agent_name=by_name, claimed_at=now)
            elif to == "waiting":
                values.update(agent="", agent_name="", claimed_at=None, reminded_at=None)
            else:
                values.update(closed_at=now, close_reason=reason)
            moved = conn.execute(
                update(tickets)
                .where(tickets.c.id == ticket_id, tickets.c.state.in_(list(expect)))
                .values(**values)
            ).rowcount
            if moved:
                kind = {"human": "claimed", "waiting": "released", "closed": "resolved"}[to]
                _event(conn, ticket_id, kind, by, reason, now)
            return _ticket(conn, ticket_id), bool(moved)

        return await self._run("change a ticket's state", op)

    async def note(self, ticket_id: int, kind: str, author: str, text: str) -> None:
        """Record what happened on a ticket; relays in either direction count as activity."""
        now = utcnow()

        def op(conn: Connection) -> None:
            _event(conn, ticket_id, kind, author, text, now)
            values: dict[str, Any] = {"last_activity_at": now}
            if kind == "to_customer":
                conn.execute(
                    update(tickets)
                    .where(tickets.c.id == ticket_id, tickets.c.first_reply_at.is_(None))
                    .values(first_reply_at=now)
                )
            if kind != "note":
                conn.execute(update(tickets).where(tickets.c.id == ticket_id).values(**values))

        await self._run("record a ticket event", op)

    async def events(self, ticket_id: int) -> list[TicketEvent]:
        def op(conn: Connection) -> list[TicketEvent]:
            rows = conn.execute(
                select(ticket_events)
                .where(ticket_events.c.ticket_id == ticket_id)
                .order_by(ticket_events.c.id)
            ).all()
            return [
                TicketEvent(r.kind, r.author, r.text, as_utc(r.created_at) or r.created_at)
                for r in rows
            ]

        return await self._run("read a ticket's events", op)

    async def open_tickets(self, *, space_chat: str | None = None) -> list[Ticket]:
        def op(conn: Connection) -> list[Ticket]:
            query = select(tickets.c.id).where(tickets.c.state.in_(OPEN_STATES))
            if space_chat is not None:
                query = query.where(tickets.c.space_chat == space_chat)
            ids = conn.execute(query.order_by(tickets.c.id)).scalars().all()
            return [t for t in (_ticket(conn, i) for i in ids) if t is not None]

        return await self._run("list open tickets", op)

    async def due_reminders(self, unclaimed_for: timedelta) -> list[Ticket]:
        """Waiting tickets unclaimed for ``unclaimed_for`` since opening or the last reminder."""
        cutoff = utcnow() - unclaimed_for

        def op(conn: Connection) -> list[Ticket]:
            ids = conn.execute(
                select(tickets.c.id).where(
                    tickets.c.state == "waiting",
                    tickets.c.created_at <= cutoff,
                    or_(tickets.c.reminded_at.is_(None), tickets.c.reminded_at <= cutoff),
                )
            ).scalars()
            return [t for t in (_ticket(conn, i) for i in ids) if t is not None]

        return await self._run("find unclaimed tickets", op)

    async def mark_reminded(self, ticket_id: int, at: datetime) -> bool:
        """Take the reminder of one interval; False if another worker took it."""

        def op(conn: Connection) -> bool:
            return bool(
                conn.execute(
                    update(tickets)
                    .where(
                        tickets.c.id == ticket_id,
                        or_(tickets.c.reminded_at.is_(None), tickets.c.reminded_at < at),
                    )
                    .values(reminded_at=utcnow())
                ).rowcount
            )

        return await self._run("record a reminder", op)

    async def idle(self, idle_for: timedelta) -> list[Ticket]:
        cutoff = utcnow() - idle_for

        def op(conn: Connection) -> list[Ticket]:
            ids = conn.execute(
                select(tickets.c.id).where(
                    tickets.c.state.in_(OPEN_STATES), tickets.c.last_activity_at <= cutoff
                )
            ).scalars()
            return [t for t in (_ticket(conn, i) for i in ids) if t is not None]

        return await self._run("find idle tickets", op)

    async def consecutive_failures(self, conversation_id: int) -> int:
        """How many of the conversation's latest messages in a row failed to be answered."""

        def op(conn: Connection) -> int:
            statuses = conn.execute(
                select(inbound_events.c.status)
                .where(inbound_events.c.conversation_id == conversation_id)
                .order_by(inbound_events.c.id.desc())
                .limit(5)
            ).scalars()
            count = 0
            for status in statuses:
                if status != "failed":
                    break
                count += 1
            return count

        return await self._run("count failed answers", op)

    async def recent_conversations(
        self, *, limit: int = 10, exclude_chats: Sequence[str] = ()
    ) -> list[tuple[int, ConversationAddress, str, datetime]]:
        """The conversations people wrote in last: id, address, name, when."""

        def op(conn: Connection) -> list[tuple[int, ConversationAddress, str, datetime]]:
            latest = (
                select(
                    inbound_events.c.conversation_id,
                    func.max(inbound_events.c.id).label("last_id"),
                )
                .group_by(inbound_events.c.conversation_id)
                .subquery()
            )
            query = (
                select(
                    conversations.c.id,
                    *ADDRESS_COLUMNS,
                    inbound_events.c.user_name,
                    inbound_events.c.received_at,
                )
                .join(latest, latest.c.conversation_id == conversations.c.id)
                .join(inbound_events, inbound_events.c.id == latest.c.last_id)
                .order_by(latest.c.last_id.desc())
                .limit(limit)
            )
            if exclude_chats:
                query = query.where(conversations.c.chat.not_in(list(exclude_chats)))
            return [
                (
                    r.id,
                    address_of(r),
                    r.user_name,
                    as_utc(r.received_at) or r.received_at,
                )
                for r in conn.execute(query)
            ]

        return await self._run("list recent conversations", op)

    async def forget(self, platform_user: str) -> int:
        """Remove what tickets hold about a person: their name, their messages in
        the ticket log and relays, the last turns shown to agents, in their own
        tickets and in others' (``forget_in_others_tickets``: call this before
        their messages are erased). Returns how many tickets were theirs. The
        tickets themselves stay (agents' notes and the timeline are the team's
        records)."""

        def op(conn: Connection) -> int:
            forget_in_others_tickets(conn, platform_user)
            theirs = list(
                conn.execute(select(tickets.c.id).where(tickets.c.customer == platform_user))
                .scalars()
                .all()
            )
            conn.execute(delete(ticket_events).where(ticket_events.c.author == platform_user))
            forget_suggestions(conn, platform_user, tickets=theirs)
            if theirs:
                conn.execute(
                    update(tickets)
                    .where(tickets.c.id.in_(theirs))
                    .values(customer="", customer_name="", summary="", details={})
                )
                # A queued ticket post still goes out, without what they said;
                # every other row about them keeps no words, and is not sent.
                for ticket_id in theirs:
                    conn.execute(
                        update(outbox)
                        .where(outbox.c.ticket_id == ticket_id, outbox.c.kind == "ticket")
                        .values(
                            text=f"Ticket #{ticket_id} (details removed at the customer's request)"
                        )
                    )
                conn.execute(
                    update(outbox)
                    .where(outbox.c.ticket_id.in_(theirs), outbox.c.kind != "ticket")
                    .values(
                        text="",
                        status=case(
                            (outbox.c.status == "pending", "failed"), else_=outbox.c.status
                        ),
                        error=case(
                            (outbox.c.status == "pending", "forgotten"), else_=outbox.c.error
                        ),
                    )
                )
            return len(theirs)

        return await self._run("forget a person's tickets", op)

    # -- outbox --------------------------------------------------------------------

    async def enqueue(
        self,
        key: str,
        address: ConversationAddress,
        text: str,
        *,
        kind: str,
        ticket_id: int | None = None,
        buttons: Sequence[tuple[str, str]] = (),
    ) -> bool:
        """Queue a message to send; False when ``key`` was queued before (nothing new)."""
        now = utcnow()

        def op(conn: Connection) -> bool:
            stmt = (
                self._insert(outbox)
                .values(
                    key=key[:200],
                    kind=kind,
                    ticket_id=ticket_id,
                    platform=address.platform,
                    tenant=address.tenant,
                    chat=address.chat,
                    thread=address.thread,
                    text=text,
                    buttons=[list(b) for b in buttons] or None,
                    status="pending",
                    next_attempt_at=now,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["key"])
            )
            return bool(conn.execute(stmt).rowcount)

        queued = await self._run("queue an outgoing message", op)
        if queued and self.on_enqueue is not None:
            self.on_enqueue()
        return queued

    async def claim_due(self, *, limit: int = 20, lease: float = 30.0) -> list[OutboxItem]:
        """Due rows, oldest first, claimed by this process for ``lease`` seconds."""
        now = utcnow()
        until = now + timedelta(seconds=lease)

        def op(conn: Connection) -> list[OutboxItem]:
            query = (
                select(outbox)
                .where(
                    outbox.c.status == "pending",
                    outbox.c.next_attempt_at <= now,
                    or_(
                        outbox.c.claimed_until.is_(None),
                        outbox.c.claimed_until < now,
                        # SQLite is one process: a claim that is not ours is
                        # left by a process that died, so it is taken over.
                        outbox.c.claimed_by != self.worker if self._single_process else false(),
                    ),
                )
                .order_by(outbox.c.id)
                .limit(limit)
            )
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            if not rows:
                return []
            conn.execute(
                update(outbox)
                .where(outbox.c.id.in_([r.id for r in rows]))
                .values(claimed_by=self.worker, claimed_until=until)
            )
            return [
                OutboxItem(
                    r.id,
                    r.key,
                    r.kind,
                    r.ticket_id,
                    address_of(r),
                    r.text,
                    r.attempts,
                    tuple((str(b[0]), str(b[1])) for b in r.buttons or ()),
                )
                for r in rows
            ]

        return await self._run("claim outgoing messages", op)

    async def renew(self, item_id: int, *, lease: float = 30.0) -> bool:
        """Extend this process's claim on a row just before sending it; False
        when the claim lapsed and another process has the row now."""
        until = utcnow() + timedelta(seconds=lease)

        def op(conn: Connection) -> bool:
            return bool(
                conn.execute(
                    update(outbox)
                    .where(
                        outbox.c.id == item_id,
                        outbox.c.claimed_by == self.worker,
                        outbox.c.status == "pending",
                    )
                    .values(claimed_until=until)
                ).rowcount
            )

        return await self._run("renew a claim on an outgoing message", op)

    async def sent(self, item_id: int, *, message: str = "") -> None:
        await self._run(
            "record a sent message",
            lambda conn: conn.execute(
                update(outbox)
                .where(outbox.c.id == item_id)
                .values(
                    status="sent",
                    sent_at=utcnow(),
                    claimed_until=None,
                    error=None,
                    sent_message=message[:128],
                )
            ),
        )

    async def retry(self, item_id: int, error: str, *, delay: float, give_up: bool = False) -> None:
        """Back off ``delay`` seconds before the next attempt, or stop trying."""

        def op(conn: Connection) -> None:
            conn.execute(
                update(outbox)
                .where(outbox.c.id == item_id)
                .values(
                    status="failed" if give_up else "pending",
                    attempts=outbox.c.attempts + 1,
                    error=error[:2000],
                    next_attempt_at=utcnow() + timedelta(seconds=delay),
                    claimed_until=None,
                )
            )

        await self._run("reschedule an outgoing message", op)

    async def unconfirmed(self, item_id: int, error: str, *, tell: Queued | None = None) -> None:
        """Set aside a row whose send may have arrived (never resent by itself),
        queuing ``tell`` for the people who can tell in the same transaction."""
        told = await self._run(
            "set aside an unconfirmed message",
            lambda conn: outbox_doubts.mark_unconfirmed(conn, self._insert, item_id, error, tell),
        )
        if told and self.on_enqueue is not None:
            self.on_enqueue()

    async def resend(self, item_id: int, *, space_chat: str) -> Resent:
        """Queue an unconfirmed row of a ticket of the space ``space_chat`` again."""
        resent = await self._run(
            "queue a message again", lambda conn: outbox_doubts.resend(conn, item_id, space_chat)
        )
        if resent is Resent.QUEUED and self.on_enqueue is not None:
            self.on_enqueue()
        return resent

    async def defer(self, item_id: int, *, delay: float) -> None:
        """Put a row back unsent without counting an attempt (its ticket is not posted yet)."""
        await self._run(
            "defer an outgoing message",
            lambda conn: conn.execute(
                update(outbox)
                .where(outbox.c.id == item_id)
                .values(next_attempt_at=utcnow() + timedelta(seconds=delay), claimed_until=None)
            ),
        )

    async def outbox_rows(self, *, status: str | None = None) -> list[dict[str, Any]]:
        def op(conn: Connection) -> list[dict[str, Any]]:
            query = select(outbox).order_by(outbox.c.id)
            if status is not None:
                query = query.where(outbox.c.status == status)
            return [dict(r._mapping) for r in conn.execute(query)]

        return await self._run("read the outbox", op)


def _open_ticket(conn: Connection, conversation_id: int) -> Ticket | None:
    row_id = conn.execute(
        select(tickets.c.id).where(
            and_(tickets.c.conversation_id == conversation_id, tickets.c.state.in_(OPEN_STATES))
        )
    ).scalar()
    return _ticket(conn, row_id) if row_id is not None else None


def _ticket(conn: Connection, ticket_id: int) -> Ticket | None:
    row = conn.execute(
        select(tickets, *ADDRESS_COLUMNS)
        .join(conversations, conversations.c.id == tickets.c.conversation_id)
        .where(tickets.c.id == ticket_id)
    ).first()
    if row is None:
        return None
    return Ticket(
        id=row.id,
        conversation_id=row.conversation_id,
        state=row.state,
        trigger=row.trigger,
        customer=row.customer,
        customer_name=row.customer_name,
        summary=row.summary,
        details=dict(row.details or {}),
        agent=row.agent,
        agent_name=row.agent_name,
        space=row.space,
        space_chat=row.space_chat,
        space_thread=row.space_thread,
        space_message=row.space_message,
        close_reason=row.close_reason,
        created_at=as_utc(row.created_at) or row.created_at,
        claimed_at=as_utc(row.claimed_at),
        first_reply_at=as_utc(row.first_reply_at),
        last_activity_at=as_utc(row.last_activity_at) or row.last_activity_at,
        reminded_at=as_utc(row.reminded_at),
        closed_at=as_utc(row.closed_at),
        customer_address=address_of(row),
    )


def _event(
    conn: Connection, ticket_id: int, kind: str, author: str, text: str, now: datetime
) -> None:
    conn.execute(
        ticket_events.insert().values(
            ticket_id=ticket_id, kind=kind, author=author, text=text, created_at=now
        )
    )
