"""Replies suggested to a ticket's agents, and what became of each.

A suggestion is written once per cause (the customer's message it answers,
or the ``/suggest`` that asked for it): a replayed message drafts nothing
twice. Its outcome is decided once: the first of send, edit-and-send and
discard wins, and a suggestion still pending when the agent answers in their
own words or the ticket closes is ``ignored``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, delete, func, select, update

from storage.addresses import ConversationAddress
from storage.db import Database, as_utc, utcnow
from storage.handoff_forget import forget_relays
from storage.models import inbound_events, outbox, suggestions, tickets
from storage.sql import Store

# Outcomes an agent decides; ``ignored`` is decided by what happens meanwhile.
DECIDED = ("sent", "edited", "discarded", "ignored")
# A suggestion the agents can act on: it has a text to send.
SENDABLE_PATHS = ("quoted", "written")
# The outbox key of a suggestion's post in the ticket (its message id is found by it).
POST_KEY = "suggestion:{id}"
# The outbox key of the message a written suggestion streams into while the
# model writes it (by cause: the suggestion is stored only once it is done);
# the post under ``POST_KEY`` then becomes that message's final text.
LIVE_KEY = "suggestion-live:{cause}"


@dataclass(frozen=True, slots=True)
class LivePost:
    """The streaming message of a suggestion: ``message`` is the platform's id
    ("" until the outbox has sent it)."""

    status: str
    message: str
    address: ConversationAddress


@dataclass(frozen=True, slots=True)
class Suggestion:
    id: int
    ticket_id: int
    conversation_id: int
    tenant: str
    cause: str
    inbound_id: int | None
    question: str
    text: str
    path: str
    language: str
    topic: str
    sources: list[dict[str, Any]]
    state: str
    agent: str
    agent_name: str
    sent_text: str
    changed: float | None
    created_at: datetime
    decided_at: datetime | None

    @property
    def sendable(self) -> bool:
        return self.path in SENDABLE_PATHS


@dataclass(frozen=True, slots=True)
class OutcomeCounts:
    """What became of suggestions, for one agent (or one tenant)."""

    who: str
    sent: int
    edited: int
    discarded: int
    ignored: int
    pending: int
    # The mean share of characters changed in those sent edited (None: none).
    changed: float | None

    @property
    def decided(self) -> int:
        return self.sent + self.edited + self.discarded + self.ignored

    @property
    def acceptance(self) -> float | None:
        """The share of decided suggestions that went out (as they were or edited)."""
        return (self.sent + self.edited) / self.decided if self.decided else None


@dataclass(frozen=True, slots=True)
class DiscardedTopic:
    topic: str
    discarded: int
    total: int


class SuggestionRepository(Store):
    """Async storage of suggestions; every method is one transaction."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)

    async def withdraw_if_forgotten(self, suggestion_id: int) -> bool:
        """Withdraw a just-queued suggestion (and empty its post) when ``/forget``
        ran while it was being stored and posted: forget runs in its own
        transaction, so it may have removed the suggestion before its post was
        queued, or emptied the ticket before the suggestion was stored. True
        when withdrawn. A forget after this finds the post by its ticket."""

        def op(conn: Connection) -> bool:
            kept = conn.execute(
                select(tickets.c.customer)
                .select_from(suggestions.join(tickets, tickets.c.id == suggestions.c.ticket_id))
                .where(suggestions.c.id == suggestion_id)
            ).first()
            # A forget before the insert left the suggestion but emptied its ticket.
            if kept is not None and kept.customer:
                return False
            conn.execute(delete(suggestions).where(suggestions.c.id == suggestion_id))
            forget_relays(conn, [POST_KEY.format(id=suggestion_id)])
            return True

        return await self._run("withdraw a forgotten suggestion's post", op)

    async def live_post(
        self, *, cause: str = "", suggestion_id: int | None = None
    ) -> LivePost | None:
        """The streaming message queued for ``cause`` (or for the cause of
        suggestion ``suggestion_id``); None when none was queued."""

        def op(conn: Connection) -> LivePost | None:
            wanted = _cause(conn, cause, suggestion_id)
            if not wanted:
                return None
            row = conn.execute(
                select(
                    outbox.c.status,
                    outbox.c.sent_message,
                    outbox.c.platform,
                    outbox.c.tenant,
                    outbox.c.chat,
                    outbox.c.thread,
                ).where(outbox.c.key == LIVE_KEY.format(cause=wanted)[:200])
            ).first()
            if row is None:
                return None
            address = ConversationAddress(row.platform, row.tenant, row.chat, row.thread)
            return LivePost(row.status, row.sent_message or "", address)

        return await self._run("read a suggestion's streaming message", op)

    async def drop_live(self, *, cause: str = "", suggestion_id: int | None = None) -> None:
        """Never send a streaming message still waiting in the outbox: the
        finished suggestion is posted in its place."""

        def op(conn: Connection) -> None:
            wanted = _cause(conn, cause, suggestion_id)
            conn.execute(
                update(outbox)
                .where(outbox.c.key == LIVE_KEY.format(cause=wanted)[:200])
                .where(outbox.c.status == "pending")
                .values(status="failed", error="superseded by the finished suggestion")
            )

        await self._run("drop a suggestion's streaming message", op)

    async def create(
        self,
        *,
        ticket_id: int,
        conversation_id: int,
        tenant: str,
        cause: str,
        inbound_id: int | None,
        question: str,
        text: str,
        path: str,
        topic: str,
        sources: list[dict[str, Any]],
        language: str = "",
    ) -> tuple[Suggestion, bool]:
        """Store a suggestion; the one stored before for ``cause`` and False when
        there is one."""
        now = utcnow()
        state = "pending" if path in SENDABLE_PATHS else "unsupported"

        def op(conn: Connection) -> tuple[Suggestion, bool]:
            stmt = (
                self._insert(suggestions)
                .values(
                    ticket_id=ticket_id,
                    conversation_id=conversation_id,
                    tenant=tenant,
                    cause=cause[:200],
                    inbound_id=inbound_id,
                    question=question,
                    text=text,
                    path=path,
                    language=language[:16],
                    topic=topic[:300],
                    sources=sources,
                    state=state,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["cause"])
            )
            created = bool(conn.execute(stmt).rowcount)
            row = conn.execute(select(suggestions).where(suggestions.c.cause == cause[:200])).one()
            return _suggestion(row), created

        return await self._run("store a suggested reply", op)

    async def exists(self, cause: str) -> bool:
        return await self._run(
            "look for a suggested reply",
            lambda conn: (
                conn.execute(
                    select(suggestions.c.id).where(suggestions.c.cause == cause[:200])
                ).first()
                is not None
            ),
        )

    async def get(self, suggestion_id: int) -> Suggestion | None:
        def op(conn: Connection) -> Suggestion | None:
            row = conn.execute(select(suggestions).where(suggestions.c.id == suggestion_id)).first()
            return _suggestion(row) if row is not None else None

        return await self._run("read a suggested reply", op)

    async def of_ticket(self, ticket_id: int) -> list[Suggestion]:
        def op(conn: Connection) -> list[Suggestion]:
            rows = conn.execute(
                select(suggestions)
                .where(suggestions.c.ticket_id == ticket_id)
                .order_by(suggestions.c.id)
            )
            return [_suggestion(r) for r in rows]

        return await self._run("read a ticket's suggested replies", op)

    async def posted_as(self, space_chat: str, message: str) -> Suggestion | None:
        """The suggestion whose post in ``space_chat`` is the message ``message``."""

        def op(conn: Connection) -> Suggestion | None:
            if not message:
                return None
            key = conn.execute(
                select(outbox.c.key)
                .where(
                    outbox.c.chat == space_chat,
                    outbox.c.sent_message == message,
                    outbox.c.key.like("suggestion:%"),
                )
                .order_by(outbox.c.id.desc())
                .limit(1)
            ).scalar()
            if key is None or not key.removeprefix("suggestion:").isdigit():
                return None
            row = conn.execute(
                select(suggestions).where(suggestions.c.id == int(key.removeprefix("suggestion:")))
            ).first()
            return _suggestion(row) if row is not None else None

        return await self._run("find a suggested reply by its post", op)

    async def decide(
        self,
        suggestion_id: int,
        state: str,
        *,
        agent: str,
        agent_name: str = "",
        sent_text: str = "",
        changed: float | None = None,
    ) -> bool:
        """Record an agent's outcome for a pending suggestion; False when it was
        decided before (the first decision stands)."""
        assert state in DECIDED

        def op(conn: Connection) -> bool:
            return bool(
                conn.execute(
                    update(suggestions)
                    .where(suggestions.c.id == suggestion_id, suggestions.c.state == "pending")
                    .values(
                        state=state,
                        agent=agent[:160],
                        agent_name=agent_name[:160],
                        sent_text=sent_text,
                        changed=changed,
                        decided_at=utcnow(),
                    )
                ).rowcount
            )

        return await self._run("record what became of a suggested reply", op)

    async def ignore_pending(self, ticket_id: int, *, agent: str = "", agent_name: str = "") -> int:
        """The ticket's pending suggestions are ignored (answered otherwise, or closed)."""

        def op(conn: Connection) -> int:
            return int(
                conn.execute(
                    update(suggestions)
                    .where(suggestions.c.ticket_id == ticket_id, suggestions.c.state == "pending")
                    .values(
                        state="ignored",
                        agent=agent[:160],
                        agent_name=agent_name[:160],
                        decided_at=utcnow(),
                    )
                ).rowcount
                or 0
            )

        return await self._run("mark suggested replies ignored", op)

    async def outcomes(
        self, tenants: list[str] | None, *, by: str = "agent", since: datetime | None = None
    ) -> list[OutcomeCounts]:
        """Outcome counts per agent (``by="agent"``) or per tenant (``by="tenant"``)
        of suggestions in ``tenants`` (None: every tenant), busiest first."""
        column = suggestions.c.agent if by == "agent" else suggestions.c.tenant

        def op(conn: Connection) -> list[OutcomeCounts]:
            def count(state: str) -> Any:
                return func.sum(case((suggestions.c.state == state, 1), else_=0))

            query = select(
                column,
                func.coalesce(count("sent"), 0),
                func.coalesce(count("edited"), 0),
                func.coalesce(count("discarded"), 0),
                func.coalesce(count("ignored"), 0),
                func.coalesce(count("pending"), 0),
                func.avg(suggestions.c.changed),
            ).where(suggestions.c.path.in_(SENDABLE_PATHS))
            if tenants is not None:
                query = query.where(suggestions.c.tenant.in_(tenants))
            if since is not None:
                query = query.where(suggestions.c.created_at >= since)
            if by == "agent":
                # Pending ones have nobody yet: they count for the tenant only.
                query = query.where(suggestions.c.state != "pending")
            rows = conn.execute(query.group_by(column)).all()
            found = [
                OutcomeCounts(
                    str(r[0]),
                    int(r[1]),
                    int(r[2]),
                    int(r[3]),
                    int(r[4]),
                    int(r[5]),
                    float(r[6]) if r[6] is not None else None,
                )
                for r in rows
            ]
            return sorted(found, key=lambda o: (-o.decided - o.pending, o.who))

        return await self._run("count what became of suggested replies", op)

    async def discarded_topics(
        self, tenants: list[str] | None, *, since: datetime | None = None, limit: int = 20
    ) -> list[DiscardedTopic]:
        """Topics whose suggestions agents discard most (at least one discarded)."""

        def op(conn: Connection) -> list[DiscardedTopic]:
            discarded = func.sum(case((suggestions.c.state == "discarded", 1), else_=0))
            query = (
                select(suggestions.c.topic, discarded, func.count())
                .where(
                    suggestions.c.path.in_(SENDABLE_PATHS),
                    suggestions.c.state != "pending",
                )
                .group_by(suggestions.c.topic)
                .having(discarded > 0)
                .order_by(discarded.desc(), func.count().desc(), suggestions.c.topic)
                .limit(limit)
            )
            if tenants is not None:
                query = query.where(suggestions.c.tenant.in_(tenants))
            if since is not None:
                query = query.where(suggestions.c.created_at >= since)
            return [DiscardedTopic(str(r[0]), int(r[1]), int(r[2])) for r in conn.execute(query)]

        return await self._run("rank discarded suggestion topics", op)

    async def last_agent_reply(self, ticket_id: int) -> str:
        """The last text that went to the customer from a suggestion of the ticket."""

        def op(conn: Connection) -> str:
            row = conn.execute(
                select(suggestions.c.sent_text)
                .where(
                    suggestions.c.ticket_id == ticket_id,
                    suggestions.c.state.in_(("sent", "edited")),
                )
                .order_by(suggestions.c.decided_at.desc())
                .limit(1)
            ).scalar()
            return str(row or "")

        return await self._run("read a ticket's last sent suggestion", op)


def forget_suggestions(conn: Connection, platform_user: str, *, tickets: list[int]) -> None:
    """Remove the suggestions drafted from a person's words: those of their own
    tickets and those answering their messages in a group's (run inside the
    caller's transaction, before their messages are erased)."""
    said = select(inbound_events.c.id).where(inbound_events.c.user_id == platform_user)
    drafted_from = suggestions.c.inbound_id.in_(said.scalar_subquery())
    if tickets:
        drafted_from = drafted_from | suggestions.c.ticket_id.in_(tickets)
    ids = list(conn.execute(select(suggestions.c.id).where(drafted_from)).scalars())
    # Their posts quote the person's words too, in tickets that may be another's.
    forget_relays(conn, [POST_KEY.format(id=i) for i in ids])
    conn.execute(delete(suggestions).where(drafted_from))


def _suggestion(row: Any) -> Suggestion:
    return Suggestion(
        id=row.id,
        ticket_id=row.ticket_id,
        conversation_id=row.conversation_id,
        tenant=row.tenant,
        cause=row.cause,
        inbound_id=row.inbound_id,
        question=row.question,
        text=row.text,
        path=row.path,
        language=row.language,
        topic=row.topic,
        sources=list(row.sources or []),
        state=row.state,
        agent=row.agent,
        agent_name=row.agent_name,
        sent_text=row.sent_text,
        changed=row.changed,
        created_at=as_utc(row.created_at),
        decided_at=as_utc(row.decided_at) if row.decided_at is not None else None,
    )


def _cause(conn: Connection, cause: str, suggestion_id: int | None) -> str:
    if suggestion_id is None:
        return cause
    found = conn.execute(
        select(suggestions.c.cause).where(suggestions.c.id == suggestion_id)
    ).scalar_one_or_none()
    return str(found or "")


__all__ = [
    "DECIDED",
    "LIVE_KEY",
    "POST_KEY",
    "DiscardedTopic",
    "LivePost",
    "OutcomeCounts",
    "Suggestion",
    "SuggestionRepository",
    "forget_suggestions",
]
