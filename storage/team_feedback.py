"""Ratings of answers and resolved tickets, the questions the desk could not
answer, and agents' answers waiting to become FAQ entries.

Proposing and deciding a learned answer write their audit rows in the same
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update

from storage.db import as_utc, utcnow
from storage.knowledge_forget import LearnedWording, forget_wordings
from storage.models import (
    escalations,
    faq_proposals,
    inbound_events,
    ratings,
    ticket_events,
    tickets,
)
from storage.sql import Store
from storage.team_roles import insert_audit


@dataclass(frozen=True, slots=True)
class Rating:
    id: int
    tenant: str
    conversation_id: int
    inbound_id: int | None
    ticket_id: int | None
    user_id: str
    question: str
    score: int | None
    comment: str
    created_at: datetime
    rated_at: datetime | None


@dataclass(frozen=True, slots=True)
class Proposal:
    id: int
    tenant: str
    question: str
    answer: str
    target_ref: str
    target_tenant: str
    ticket_id: int | None
    proposed_by: str
    status: str
    decided_by: str
    entry_ref: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class GapQuestion:
    tenant: str
    question: str
    why: str  # escalated | rated bad


class TeamFeedback(Store):
    """Ratings and learned answers; every public method is one transaction."""

    # -- ratings -----------------------------------------------------------------------

    async def invite_rating(
        self,
        *,
        tenant: str,
        conversation_id: int,
        user_id: str,
        question: str,
        inbound_id: int | None = None,
        ticket_id: int | None = None,
    ) -> int:
        """Record that the customer was asked to rate an answer (or a resolved ticket)."""
        now = utcnow()

        def op(conn: Connection) -> int:
            if ticket_id is not None:
                # A replayed resolution invites once.
                found = conn.execute(
                    select(ratings.c.id).where(ratings.c.ticket_id == ticket_id)
                ).scalar()
                if found is not None:
                    return int(found)
            return int(
                conn.execute(
                    ratings.insert()
                    .values(
                        tenant=tenant,
                        conversation_id=conversation_id,
                        inbound_id=inbound_id,
                        ticket_id=ticket_id,
                        user_id=user_id,
                        question=question[:2000],
                        created_at=now,
                    )
                    .returning(ratings.c.id)
                ).scalar_one()
            )

        return await self._run("store a rating invitation", op)

    async def open_invitation(self, conversation_id: int, *, since: datetime) -> Rating | None:
        """The conversation's latest invitation to rate, if it came after ``since``."""
        query = (
            select(ratings)
            .where(ratings.c.conversation_id == conversation_id, ratings.c.created_at >= since)
            .order_by(ratings.c.id.desc())
            .limit(1)
        )

        def op(conn: Connection) -> Rating | None:
            row = conn.execute(query).first()
            return _rating(row) if row is not None else None

        return await self._run("read a rating invitation", op)

    async def rate(self, rating_id: int, score: int, comment: str = "") -> Rating | None:
        """Store (or change) the rating; a rating without a comment keeps an earlier one."""
        if score not in (1, -1):
            raise ValueError("a rating is 1 or -1")
        now = utcnow()

        def op(conn: Connection) -> Rating | None:
            values: dict[str, Any] = {"score": score, "rated_at": now}
            if comment:
                values["comment"] = comment[:2000]
            conn.execute(update(ratings).where(ratings.c.id == rating_id).values(**values))
            row = conn.execute(select(ratings).where(ratings.c.id == rating_id)).first()
            return _rating(row) if row is not None else None

        return await self._run("store a rating", op)

    async def ratings(self, *, tenant: str | None = None, limit: int = 100) -> list[Rating]:
        """Given ratings, newest first."""
        query = (
            select(ratings)
            .where(ratings.c.score.is_not(None))
            .order_by(ratings.c.id.desc())
            .limit(limit)
        )
        if tenant is not None:
            query = query.where(ratings.c.tenant == tenant)
        return await self._run(
            "read ratings", lambda conn: [_rating(r) for r in conn.execute(query)]
        )

    async def gap_questions(
        self, *, tenant: str | None = None, limit: int = 2000
    ) -> list[GapQuestion]:
        """Questions the knowledge base escalated and answers customers rated bad."""

        def op(conn: Connection) -> list[GapQuestion]:
            escalated = select(escalations.c.tenant, escalations.c.question).order_by(
                escalations.c.id.desc()
            )
            bad = (
                select(ratings.c.tenant, ratings.c.question)
                .where(ratings.c.score < 0, ratings.c.question != "")
                .order_by(ratings.c.id.desc())
            )
            if tenant is not None:
                escalated = escalated.where(escalations.c.tenant == tenant)
                bad = bad.where(ratings.c.tenant == tenant)
            found = [
                GapQuestion(t, q, "escalated") for t, q in conn.execute(escalated.limit(limit))
            ]
            found += [GapQuestion(t, q, "rated bad") for t, q in conn.execute(bad.limit(limit))]
            return found

        return await self._run("read unanswered questions", op)

    # -- learned answers -------------------------------------------------------------

    async def propose(
        self,
        *,
        tenant: str,
        question: str,
        answer: str,
        proposed_by: str,
        target_ref: str = "",
        target_tenant: str = "",
        ticket_id: int | None = None,
    ) -> int:
        now = utcnow()

        def op(conn: Connection) -> int:
            proposal_id = int(
                conn.execute(
                    faq_proposals.insert()
                    .values(
                        tenant=tenant,
                        question=question,
                        answer=answer,
                        target_ref=target_ref,
                        target_tenant=target_tenant,
                        ticket_id=ticket_id,
                        proposed_by=proposed_by,
                        status="pending",
                        created_at=now,
                    )
                    .returning(faq_proposals.c.id)
                ).scalar_one()
            )
            details = {"ticket": ticket_id, "phrasing_of": target_ref or None}
            insert_audit(
                conn, tenant, proposed_by, "faq.learn", f"proposal {proposal_id}", details, now
            )
            return proposal_id

        return await self._run("store a learned answer", op)

    async def proposals(
        self, *, tenant: str | None = None, status: str = "pending", limit: int = 50
    ) -> list[Proposal]:
        query = (
            select(faq_proposals)
            .where(faq_proposals.c.status == status)
            .order_by(faq_proposals.c.id)
            .limit(limit)
        )
        if tenant is not None:
            query = query.where(faq_proposals.c.tenant == tenant)
        return await self._run(
            "read learned answers", lambda conn: [_proposal(r) for r in conn.execute(query)]
        )

    async def proposal(self, proposal_id: int) -> Proposal | None:
        query = select(faq_proposals).where(faq_proposals.c.id == proposal_id)

        def op(conn: Connection) -> Proposal | None:
            row = conn.execute(query).first()
            return _proposal(row) if row is not None else None

        return await self._run("read a learned answer", op)

    async def decide(
        self,
        proposal_id: int,
        *,
        approved: bool,
        by: str,
        entry_ref: str = "",
        answer: str | None = None,
    ) -> Proposal | None:
        """Approve or reject a pending proposal; None when it was not pending.
        Audited in the same transaction."""
        now = utcnow()

        def op(conn: Connection) -> Proposal | None:
            values: dict[str, Any] = {
                "status": "approved" if approved else "rejected",
                "decided_by": by,
                "decided_at": now,
                "entry_ref": entry_ref,
            }
            if answer is not None:
                values["answer"] = answer
            moved = conn.execute(
                update(faq_proposals)
                .where(faq_proposals.c.id == proposal_id, faq_proposals.c.status == "pending")
                .values(**values)
            ).rowcount
            if not moved:
                return None
            row = conn.execute(select(faq_proposals).where(faq_proposals.c.id == proposal_id)).one()
            found = _proposal(row)
            action = "faq.approve" if approved else "faq.reject"
            details = {"entry": entry_ref or None, "edited": answer is not None}
            insert_audit(conn, found.tenant, by, action, f"proposal {proposal_id}", details, now)
            return found

        return await self._run("decide a learned answer", op)


def forget_learned(conn: Connection, platform_user: str, *, sqlite: bool) -> int:
    """Remove the learned answers that quote what ``platform_user`` asked in a
    ticket (``/learn`` copies the customer's question), and take the approved
    ones' questions back out of the knowledge base. Needs their messages still
    stored: runs before their events are emptied, inside the caller's
    transaction. Returns the proposals removed."""
    theirs = select(inbound_events.c.conversation_id).where(
        inbound_events.c.user_id == platform_user
    )
    said = list(
        conn.execute(
            select(inbound_events.c.text).where(inbound_events.c.user_id == platform_user)
        ).scalars()
    )
    said += conn.execute(
        select(ticket_events.c.text).where(
            ticket_events.c.author == platform_user, ticket_events.c.kind == "from_customer"
        )
    ).scalars()
    # As /learn takes it: the whole message, or the turn a ticket shows (cut at 500).
    texts = {variant for t in said for variant in (t.strip(), t[:500].strip()) if variant}
    in_their_tickets = select(tickets.c.id).where(
        tickets.c.conversation_id.in_(theirs.scalar_subquery())
    )
    rows = [
        row
        for row in conn.execute(
            select(faq_proposals).where(
                faq_proposals.c.ticket_id.in_(in_their_tickets.scalar_subquery())
            )
        )
        if row.question in texts
    ]
    learned = [
        LearnedWording(
            tenant=row.target_tenant if row.target_ref else row.tenant,
            ref=row.entry_ref,
            question=row.question,
            new_entry=not row.target_ref,
        )
        for row in rows
        if row.status == "approved" and row.entry_ref
    ]
    forget_wordings(conn, learned, sqlite=sqlite)
    for row in rows:
        conn.execute(delete(faq_proposals).where(faq_proposals.c.id == row.id))
    return len(rows)


def _rating(row: Any) -> Rating:
    return Rating(
        id=int(row.id),
        tenant=row.tenant,
        conversation_id=int(row.conversation_id),
        inbound_id=row.inbound_id,
        ticket_id=row.ticket_id,
        user_id=row.user_id,
        question=row.question,
        score=row.score,
        comment=row.comment,
        created_at=as_utc(row.created_at) or row.created_at,
        rated_at=as_utc(row.rated_at),
    )


def _proposal(row: Any) -> Proposal:
    return Proposal(
        id=int(row.id),
        tenant=row.tenant,
        question=row.question,
        answer=row.answer,
        target_ref=row.target_ref,
        target_tenant=row.target_tenant,
        ticket_id=row.ticket_id,
        proposed_by=row.proposed_by,
        status=row.status,
        decided_by=row.decided_by,
        entry_ref=row.entry_ref,
        created_at=as_utc(row.created_at) or row.created_at,
    )
