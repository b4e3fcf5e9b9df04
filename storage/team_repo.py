"""Storage for the support team's controls: roles per tenant, the audit trail,
daily token quotas and what each model answer cost, ratings, and agents'
answers waiting to become FAQ entries.

Changes that staff make (a role, a quota, a proposal decided) write their
audit row in the same transaction, so the trail never misses one that
happened. Every public method is one transaction (``Database.run``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, and_, case, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from storage.db import Database, as_utc, utcnow
from storage.models import (
    audit_log,
    conversations,
    escalations,
    faq_proposals,
    inbound_events,
    messages,
    model_usage,
    quota_notices,
    quotas,
    ratings,
    team_roles,
)

T = TypeVar("T")

ROLES = ("admin", "agent")
# Quota subjects that are not a person: the whole tenant, and each of its users.
TENANT = ""
EACH_USER = "*"


@dataclass(frozen=True, slots=True)
class RoleGrant:
    tenant: str
    platform_user: str
    role: str
    granted_by: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    tenant: str
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.created_at.isoformat(),
            "tenant": self.tenant,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class QuotaState:
    """Today's usage and the limits that apply to one person (None: no limit)."""

    user_used: int
    tenant_used: int
    user_limit: int | None
    tenant_limit: int | None

    @property
    def exhausted(self) -> bool:
        return (self.user_limit is not None and self.user_used >= self.user_limit) or (
            self.tenant_limit is not None and self.tenant_used >= self.tenant_limit
        )


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
class TeamStats:
    """One tenant's figures (or every tenant's)."""

    conversations: int
    messages: int
    answers: int
    failed: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    model_answers: int
    prompt_tokens: int
    completion_tokens: int
    model_seconds: float
    # How many answers' seconds the backend reported itself (the rest: wall time).
    backend_timed: int
    rated_good: int
    rated_bad: int


@dataclass(frozen=True, slots=True)
class GapQuestion:
    tenant: str
    question: str
    why: str  # escalated | rated bad


class TeamRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _run(self, what: str, fn: Callable[[Connection], T]) -> T:
        return await self.db.run(fn, what=what)

    def _insert(self, table: Any) -> Any:
        return (postgresql if self.db.dialect == "postgresql" else sqlite).insert(table)

    # -- roles ---------------------------------------------------------------------

    async def set_role(
        self, tenant: str, platform_user: str, role: str | None, *, by: str
    ) -> str | None:
        """Give ``platform_user`` a role in ``tenant`` (None: none, a customer);
        returns the role they had. Audited in the same transaction."""
        if role is not None and role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        now = utcnow()

        def op(conn: Connection) -> str | None:
            where = and_(team_roles.c.tenant == tenant, team_roles.c.platform_user == platform_user)
            before = conn.execute(select(team_roles.c.role).where(where)).scalar()
            if role is None:
                conn.execute(delete(team_roles).where(where))
            else:
                conn.execute(
                    self._insert(team_roles)
                    .values(
                        tenant=tenant,
                        platform_user=platform_user,
                        role=role,
                        granted_by=by,
                        updated_at=now,
                    )
                    .on_conflict_do_update(
                        index_elements=["tenant", "platform_user"],
                        set_={"role": role, "granted_by": by, "updated_at": now},
                    )
                )
            _audit(
                conn,
                tenant,
                by,
                "role",
                platform_user,
                {"from": before or "customer", "to": role or "customer"},
                now,
            )
            return before

        return await self._run("store a role", op)

    async def role_of(self, tenant: str, platform_user: str) -> str | None:
        query = select(team_roles.c.role).where(
            team_roles.c.tenant == tenant, team_roles.c.platform_user == platform_user
        )
        return await self._run("read a role", lambda conn: conn.execute(query).scalar())

    async def roles(self, tenant: str) -> list[RoleGrant]:
        query = (
            select(team_roles)
            .where(team_roles.c.tenant == tenant)
            .order_by(team_roles.c.role, team_roles.c.platform_user)
        )

        def op(conn: Connection) -> list[RoleGrant]:
            return [
                RoleGrant(
                    r.tenant,
                    r.platform_user,
                    r.role,
                    r.granted_by,
                    as_utc(r.updated_at) or r.updated_at,
                )
                for r in conn.execute(query)
            ]

        return await self._run("read roles", op)

    # -- audit ---------------------------------------------------------------------

    async def audit(
        self,
        tenant: str,
        actor: str,
        action: str,
        target: str = "",
        details: dict[str, Any] | None = None,
    ) -> int:
        now = utcnow()
        return await self._run(
            "store an audit record",
            lambda conn: _audit(conn, tenant, actor, action, target, details or {}, now),
        )

    async def audit_entries(
        self, *, tenant: str | None = None, limit: int | None = None, newest_first: bool = True
    ) -> list[AuditEntry]:
        """Audit records of ``tenant`` (None: every tenant)."""
        order = audit_log.c.id.desc() if newest_first else audit_log.c.id
        query = select(audit_log).order_by(order)
        if tenant is not None:
            query = query.where(audit_log.c.tenant == tenant)
        if limit is not None:
            query = query.limit(limit)

        def op(conn: Connection) -> list[AuditEntry]:
            return [
                AuditEntry(
                    int(r.id),
                    r.tenant,
                    r.actor,
                    r.action,
                    r.target,
                    dict(r.details or {}),
                    as_utc(r.created_at) or r.created_at,
                )
                for r in conn.execute(query)
            ]

        return await self._run("read the audit trail", op)

    # -- quotas and usage -----------------------------------------------------------

    async def set_quota(
        self, tenant: str, subject: str, daily_tokens: int | None, *, by: str
    ) -> None:
        """Set (None: remove) a daily token limit; audited in the same transaction."""
        now = utcnow()

        def op(conn: Connection) -> None:
            where = and_(quotas.c.tenant == tenant, quotas.c.subject == subject)
            conn.execute(delete(quotas).where(where))
            if daily_tokens is not None:
                conn.execute(
                    quotas.insert().values(
                        tenant=tenant,
                        subject=subject,
                        daily_tokens=daily_tokens,
                        set_by=by,
                        updated_at=now,
                    )
                )
            label = {TENANT: "tenant", EACH_USER: "each user"}.get(subject, subject)
            _audit(conn, tenant, by, "quota", label, {"daily_tokens": daily_tokens}, now)

        await self._run("store a quota", op)

    async def quotas(self, tenant: str) -> dict[str, int]:
        """The tenant's limits by subject ("" the tenant, "*" each user, else a person)."""
        query = select(quotas.c.subject, quotas.c.daily_tokens).where(quotas.c.tenant == tenant)
        return await self._run(
            "read quotas", lambda conn: {r[0]: int(r[1]) for r in conn.execute(query)}
        )

    async def quota_state(
        self,
        tenant: str,
        user_id: str,
        *,
        since: datetime,
        default_user: int | None = None,
        default_tenant: int | None = None,
    ) -> QuotaState:
        """Tokens ``user_id`` and the tenant used since ``since``, and their limits.

        A limit stored for the tenant wins over the defaults (the settings)."""

        def op(conn: Connection) -> QuotaState:
            limits = {
                r[0]: int(r[1])
                for r in conn.execute(
                    select(quotas.c.subject, quotas.c.daily_tokens).where(
                        quotas.c.tenant == tenant,
                        quotas.c.subject.in_([TENANT, EACH_USER, user_id]),
                    )
                )
            }
            tokens = model_usage.c.prompt_tokens + model_usage.c.completion_tokens
            row = conn.execute(
                select(
                    func.coalesce(
                        func.sum(case((model_usage.c.user_id == user_id, tokens), else_=0)), 0
                    ),
                    func.coalesce(func.sum(tokens), 0),
                ).where(model_usage.c.tenant == tenant, model_usage.c.created_at >= since)
            ).one()
            user_limit = limits.get(user_id, limits.get(EACH_USER, default_user))
            tenant_limit = limits.get(TENANT, default_tenant)
            return QuotaState(int(row[0]), int(row[1]), user_limit, tenant_limit)

        return await self._run("read today's usage", op)

    async def record_usage(
        self,
        *,
        tenant: str,
        user_id: str,
        inbound_id: int | None,
        plan: str,
        prompt_tokens: int,
        completion_tokens: int,
        model_seconds: float,
        seconds_source: str,
    ) -> None:
        now = utcnow()
        await self._run(
            "record model usage",
            lambda conn: conn.execute(
                model_usage.insert().values(
                    tenant=tenant,
                    user_id=user_id,
                    inbound_id=inbound_id,
                    plan=plan,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    model_seconds=model_seconds,
                    seconds_source=seconds_source,
                    created_at=now,
                )
            ),
        )

    async def first_quota_notice(self, tenant: str, user_id: str, day: str) -> bool:
        """True the first time this is asked for (tenant, user, day): tell them once."""
        now = utcnow()

        def op(conn: Connection) -> bool:
            result = conn.execute(
                self._insert(quota_notices)
                .values(tenant=tenant, user_id=user_id, day=day, created_at=now)
                .on_conflict_do_nothing(index_elements=["tenant", "user_id", "day"])
            )
            return bool(result.rowcount)

        return await self._run("record a quota notice", op)

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
            _audit(conn, tenant, proposed_by, "faq.learn", f"proposal {proposal_id}", details, now)
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
            _audit(conn, found.tenant, by, action, f"proposal {proposal_id}", details, now)
            return found

        return await self._run("decide a learned answer", op)

    # -- reporting -------------------------------------------------------------------

    async def stats(self, tenant: str | None) -> TeamStats:
        """Figures for one tenant, or (None) every tenant."""

        def op(conn: Connection) -> TeamStats:
            def scoped(query: Any, column: Any) -> Any:
                return query if tenant is None else query.where(column == tenant)

            ids = scoped(select(conversations.c.id), conversations.c.tenant)
            n_conversations = conn.execute(
                scoped(select(func.count()).select_from(conversations), conversations.c.tenant)
            ).scalar()
            n_messages = conn.execute(
                select(func.count())
                .select_from(messages)
                .where(messages.c.conversation_id.in_(ids.scalar_subquery()))
            ).scalar()
            latencies = sorted(
                conn.execute(
                    select(messages.c.latency_ms)
                    .where(
                        messages.c.role == "assistant",
                        messages.c.latency_ms.is_not(None),
                        messages.c.conversation_id.in_(ids.scalar_subquery()),
                    )
                    .order_by(messages.c.id.desc())
                    .limit(10_000)
                ).scalars()
            )
            failed = conn.execute(
                select(func.count())
                .select_from(inbound_events)
                .where(
                    inbound_events.c.status == "failed",
                    inbound_events.c.conversation_id.in_(ids.scalar_subquery()),
                )
            ).scalar()
            usage = conn.execute(
                scoped(
                    select(
                        func.count(),
                        func.coalesce(func.sum(model_usage.c.prompt_tokens), 0),
                        func.coalesce(func.sum(model_usage.c.completion_tokens), 0),
                        func.coalesce(func.sum(model_usage.c.model_seconds), 0.0),
                        func.coalesce(
                            func.sum(case((model_usage.c.seconds_source == "backend", 1), else_=0)),
                            0,
                        ),
                    ),
                    model_usage.c.tenant,
                )
            ).one()
            scores = dict(
                conn.execute(
                    scoped(
                        select(ratings.c.score, func.count())
                        .where(ratings.c.score.is_not(None))
                        .group_by(ratings.c.score),
                        ratings.c.tenant,
                    )
                ).all()
            )
            return TeamStats(
                conversations=int(n_conversations or 0),
                messages=int(n_messages or 0),
                answers=len(latencies),
                failed=int(failed or 0),
                latency_p50_ms=_percentile(latencies, 50),
                latency_p95_ms=_percentile(latencies, 95),
                model_answers=int(usage[0]),
                prompt_tokens=int(usage[1]),
                completion_tokens=int(usage[2]),
                model_seconds=float(usage[3]),
                backend_timed=int(usage[4]),
                rated_good=int(scores.get(1, 0)),
                rated_bad=int(scores.get(-1, 0)),
            )

        return await self._run("read usage figures", op)

    # -- forgetting ------------------------------------------------------------------

    async def forget(self, platform_user: str) -> int:
        """Remove what the team's tables hold about a person: their ratings (with
        the questions they quote), roles, quotas and notices; their model usage
        stays in the tenant's totals without their id. Returns the ratings removed."""

        def op(conn: Connection) -> int:
            removed = conn.execute(delete(ratings).where(ratings.c.user_id == platform_user))
            conn.execute(delete(team_roles).where(team_roles.c.platform_user == platform_user))
            conn.execute(delete(quotas).where(quotas.c.subject == platform_user))
            conn.execute(delete(quota_notices).where(quota_notices.c.user_id == platform_user))
            conn.execute(
                update(model_usage).where(model_usage.c.user_id == platform_user).values(user_id="")
            )
            return int(removed.rowcount or 0)

        return await self._run("forget a person's team records", op)


def _audit(
    conn: Connection,
    tenant: str,
    actor: str,
    action: str,
    target: str,
    details: dict[str, Any],
    now: datetime,
) -> int:
    return int(
        conn.execute(
            audit_log.insert()
            .values(
                tenant=tenant,
                actor=actor,
                action=action,
                target=target[:300],
                details=details,
                created_at=now,
            )
            .returning(audit_log.c.id)
        ).scalar_one()
    )


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


def _percentile(sorted_values: Iterable[int], pct: float) -> float | None:
    values = list(sorted_values)
    if not values:
        return None
    # Nearest-rank percentile: always one of the observed values.
    rank = max(1, -(-len(values) * pct // 100))
    return float(values[int(rank) - 1])
