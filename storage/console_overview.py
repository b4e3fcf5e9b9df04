"""The console's overview: figures per UTC day over a period, one query per
concern (traffic, how questions were answered, latency, tickets, ratings).

Days are grouped in the database (``date()`` on SQLite, ``date(x AT TIME ZONE
'UTC')`` on PostgreSQL); percentiles are left to Python, over at most
``MAX_SAMPLES`` rows each.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, distinct, func, select

from storage.db import as_utc
from storage.models import conversations, faq_answers, messages, ratings, tickets

# Rows a report reads for its percentiles; enough for weeks of a busy desk.
MAX_SAMPLES = 200_000
ANSWER_PATHS = ("verbatim", "grounded", "escalated")
# The overview's rating series: what was rated (an answer or a resolved ticket) and
# how. Words rather than 👍/👎, which machines without an emoji font draw as boxes.
RATING_SERIES = {
    (False, 1): "answers rated good",
    (False, -1): "answers rated bad",
    (True, 1): "tickets rated good",
    (True, -1): "tickets rated bad",
}


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The ``pct`` percentile of ``values`` in any order (None when empty): the
    value at rank ``pct`` % of their number, rounded half to even, at least 1."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def day_of(dialect: str, column: Any) -> Any:
    """The UTC calendar day of a timestamp column, computed in the database."""
    if dialect == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)


@dataclass(slots=True)
class Overview:
    """Figures per UTC day (``days``, ISO dates) over a period."""

    days: list[str]
    # platform -> day -> count
    conversations: dict[str, dict[str, int]] = field(default_factory=dict)
    messages: dict[str, dict[str, int]] = field(default_factory=dict)
    # how a question was answered -> day -> count
    answered: dict[str, dict[str, int]] = field(default_factory=dict)
    # day -> (p50, p95) of answer latency in ms
    latency: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    latency_overall: tuple[float | None, float | None] = (None, None)
    # day the ticket opened -> (p50, p95) minutes until the first human reply
    first_reply: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    first_reply_overall: tuple[float | None, float | None] = (None, None)
    tickets_opened: int = 0
    tickets_unanswered: int = 0
    # Over the whole period (a conversation active on two days counts once).
    total_conversations: int = 0
    total_messages: int = 0
    customers: int = 0
    # a RATING_SERIES name -> day rated -> count
    ratings: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def rated_good(self) -> int:
        return sum(sum(v.values()) for k, v in self.ratings.items() if k.endswith("good"))

    @property
    def rated_bad(self) -> int:
        return sum(sum(v.values()) for k, v in self.ratings.items() if k.endswith("bad"))

    @property
    def good_share(self) -> float | None:
        """The share of 👍 among the period's ratings (None: nothing was rated)."""
        rated = self.rated_good + self.rated_bad
        return self.rated_good / rated if rated else None


@dataclass(frozen=True, slots=True)
class _Period:
    """The UTC days read, and the tenant they are read for (None: every tenant)."""

    start: datetime
    end: datetime
    tenant: str | None
    dialect: str

    def scoped(self, query: Any, tenant_column: Any) -> Any:
        return query if self.tenant is None else query.where(tenant_column == self.tenant)

    def day(self, column: Any) -> Any:
        return day_of(self.dialect, column).label("day")

    def within(self, column: Any) -> tuple[Any, Any]:
        return column >= self.start, column < self.end


def read_overview(
    conn: Connection, since: date, until: date, *, tenant: str | None, dialect: str
) -> Overview:
    """Figures for the UTC days ``since`` to ``until`` inclusive."""
    start = datetime(since.year, since.month, since.day, tzinfo=UTC)
    end = datetime(until.year, until.month, until.day, tzinfo=UTC) + timedelta(days=1)
    period = _Period(start, end, tenant, dialect)
    result = Overview(
        days=[(since + timedelta(days=n)).isoformat() for n in range((until - since).days + 1)]
    )
    _traffic(conn, period, result)
    _answered(conn, period, result)
    _latency(conn, period, result)
    _tickets(conn, period, result)
    _ratings(conn, period, result)
    return result


def _traffic(conn: Connection, period: _Period, result: Overview) -> None:
    day = period.day(messages.c.created_at)
    per_platform = period.scoped(
        select(
            day,
            conversations.c.platform,
            func.count(distinct(messages.c.conversation_id)),
            func.count(),
        )
        .select_from(messages.join(conversations))
        .where(*period.within(messages.c.created_at))
        .group_by(day, conversations.c.platform),
        conversations.c.tenant,
    )
    for d, platform, n_conv, n_msg in conn.execute(per_platform):
        key = str(d)
        result.conversations.setdefault(platform, {})[key] = int(n_conv)
        result.messages.setdefault(platform, {})[key] = int(n_msg)

    totals = period.scoped(
        select(
            func.count(distinct(messages.c.conversation_id)),
            func.count(),
            func.count(distinct(messages.c.user_id)),
        )
        .select_from(messages.join(conversations))
        .where(*period.within(messages.c.created_at)),
        conversations.c.tenant,
    )
    n_conv, n_msg, n_users = conn.execute(totals).one()
    result.total_conversations = int(n_conv or 0)
    result.total_messages = int(n_msg or 0)
    result.customers = int(n_users or 0)


def _answered(conn: Connection, period: _Period, result: Overview) -> None:
    answered: dict[str, dict[str, int]] = {
        name: defaultdict(int) for name in ("verbatim", "grounded", "escalated", "person", "chat")
    }
    a_day = period.day(faq_answers.c.created_at)
    logged = period.scoped(
        select(a_day, faq_answers.c.path, func.count())
        .where(*period.within(faq_answers.c.created_at))
        .group_by(a_day, faq_answers.c.path),
        faq_answers.c.tenant,
    )
    for d, path, n in conn.execute(logged):
        if path in answered:
            answered[path][str(d)] += int(n)
    t_day = period.day(tickets.c.created_at)
    handed = period.scoped(
        select(t_day, func.count())
        .select_from(tickets.join(conversations))
        # Escalation tickets are already counted as escalated questions.
        .where(*period.within(tickets.c.created_at), tickets.c.trigger != "escalation")
        .group_by(t_day),
        conversations.c.tenant,
    )
    for d, n in conn.execute(handed):
        answered["person"][str(d)] += int(n)
    day = period.day(messages.c.created_at)
    chat_answers = period.scoped(
        select(day, func.count())
        .select_from(messages.join(conversations))
        .where(
            *period.within(messages.c.created_at),
            messages.c.role == "assistant",
            messages.c.kind == "chat",
        )
        .group_by(day),
        conversations.c.tenant,
    )
    for d, n in conn.execute(chat_answers):
        key = str(d)
        # Chat answers that were not the knowledge base's or a handoff's
        # notice were written by the model from the conversation alone.
        others = sum(answered[p][key] for p in (*ANSWER_PATHS, "person"))
        answered["chat"][key] = max(0, int(n) - others)
    result.answered = {k: dict(v) for k, v in answered.items()}


def _latency(conn: Connection, period: _Period, result: Overview) -> None:
    day = period.day(messages.c.created_at)
    samples = period.scoped(
        select(day, messages.c.latency_ms)
        .select_from(messages.join(conversations))
        .where(
            *period.within(messages.c.created_at),
            messages.c.role == "assistant",
            messages.c.latency_ms.is_not(None),
        )
        .limit(MAX_SAMPLES),
        conversations.c.tenant,
    )
    by_day: dict[str, list[float]] = defaultdict(list)
    for d, ms in conn.execute(samples):
        by_day[str(d)].append(float(ms))
    result.latency = {d: (percentile(v, 50), percentile(v, 95)) for d, v in sorted(by_day.items())}
    every = [x for v in by_day.values() for x in v]
    result.latency_overall = (percentile(every, 50), percentile(every, 95))


def _tickets(conn: Connection, period: _Period, result: Overview) -> None:
    t_day = period.day(tickets.c.created_at)
    opened = period.scoped(
        select(t_day, tickets.c.created_at, tickets.c.first_reply_at)
        .select_from(tickets.join(conversations))
        .where(*period.within(tickets.c.created_at))
        .limit(MAX_SAMPLES),
        conversations.c.tenant,
    )
    waits: dict[str, list[float]] = defaultdict(list)
    for d, created, first in conn.execute(opened):
        result.tickets_opened += 1
        if first is None:
            result.tickets_unanswered += 1
            continue
        minutes = ((as_utc(first) or first) - (as_utc(created) or created)).total_seconds()
        waits[str(d)].append(minutes / 60)
    result.first_reply = {
        d: (percentile(v, 50), percentile(v, 95)) for d, v in sorted(waits.items())
    }
    all_waits = [x for v in waits.values() for x in v]
    result.first_reply_overall = (percentile(all_waits, 50), percentile(all_waits, 95))


def _ratings(conn: Connection, period: _Period, result: Overview) -> None:
    # A rating counts on the day it was given, not the day it was invited.
    r_day = period.day(ratings.c.rated_at)
    for_ticket = ratings.c.ticket_id.is_not(None).label("for_ticket")
    rated = period.scoped(
        select(r_day, for_ticket, ratings.c.score, func.count())
        .where(ratings.c.score.in_((1, -1)), *period.within(ratings.c.rated_at))
        .group_by(r_day, for_ticket, ratings.c.score),
        ratings.c.tenant,
    )
    result.ratings = {name: {} for name in RATING_SERIES.values()}
    for d, is_ticket, score, n in conn.execute(rated):
        name = RATING_SERIES[(bool(is_ticket), int(score))]
        result.ratings[name][str(d)] = int(n)
