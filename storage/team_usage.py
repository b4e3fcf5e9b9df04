"""Daily token quotas, what each model answer cost, and a tenant's figures.

Setting a quota writes its audit row in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, case, delete, func, select

from storage.db import utcnow
from storage.models import (
    conversations,
    inbound_events,
    messages,
    model_usage,
    quota_notices,
    quotas,
    ratings,
)
from storage.sql import Store, nearest_rank
from storage.team_roles import insert_audit

# Quota subjects that are not a person: the whole tenant, and each of its users.
TENANT = ""
EACH_USER = "*"


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


class TeamUsage(Store):
    """Quotas, model usage and figures; every public method is one transaction."""

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
            insert_audit(conn, tenant, by, "quota", label, {"daily_tokens": daily_tokens}, now)

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
                latency_p50_ms=nearest_rank(latencies, 50),
                latency_p95_ms=nearest_rank(latencies, 95),
                model_answers=int(usage[0]),
                prompt_tokens=int(usage[1]),
                completion_tokens=int(usage[2]),
                model_seconds=float(usage[3]),
                backend_timed=int(usage[4]),
                rated_good=int(scores.get(1, 0)),
                rated_bad=int(scores.get(-1, 0)),
            )

        return await self._run("read usage figures", op)
