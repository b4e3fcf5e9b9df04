"""Outcomes for the console's overview, per UTC day, computed in SQL.

A **case** is a stretch of one customer conversation: it starts with the
customer's first message, with their first message after a ticket of the
conversation was resolved (closed), or with their first message after
``idle`` seconds of silence; it lasts until the next such start.

- A case is **handed off** when a ticket of its conversation opened during it.
- A case is **resolved by the bot** when it was not handed off and the
  customer did not come back within ``RETURN_WINDOW`` of its last message
  (no next case starting in that window), once that window has passed.
- A case is **decided** when either is known: it was handed off, the customer
  came back within the window, or the window has passed. The bot's share is
  of decided cases; the handoff rate is of all cases.

Ratings are grouped by the answer path of what was rated: a resolved ticket's
rating is ``agent``; an answer's is the path its answer log recorded
(``verbatim``, ``grounded``, ``clarify``, ``escalated``), ``documents`` for a
verbatim or grounded answer from document passages, and ``chat`` when the
knowledge base logged nothing (plain chat). Suggestion acceptance is the
share of decided suggestions (sent, sent edited, discarded, ignored) that
were sent, by the day they were drafted.

Conversations that host tickets (support spaces) are not customers' and are
left out.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, DateTime, bindparam, text

# A customer who writes again within this long after a case did not have it resolved.
RETURN_WINDOW = timedelta(days=7)
RATING_PATHS = ("verbatim", "grounded", "documents", "clarify", "agent", "escalated", "chat")


@dataclass(slots=True)
class Outcomes:
    """Outcome figures per UTC day (``days``, ISO dates)."""

    days: list[str]
    # day -> count, by the day each case started
    cases: dict[str, int] = field(default_factory=dict)
    handed_off: dict[str, int] = field(default_factory=dict)
    bot_resolved: dict[str, int] = field(default_factory=dict)
    decided: dict[str, int] = field(default_factory=dict)
    # answer path -> day rated -> (good, bad)
    ratings: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    # day drafted -> (sent as is or edited, decided)
    suggestions: dict[str, tuple[int, int]] = field(default_factory=dict)

    def handoff_rate(self, day: str | None = None) -> float | None:
        return _share(self.handed_off, self.cases, day)

    def bot_share(self, day: str | None = None) -> float | None:
        return _share(self.bot_resolved, self.decided, day)

    def acceptance(self, day: str | None = None) -> float | None:
        sent = {d: v[0] for d, v in self.suggestions.items()}
        decided = {d: v[1] for d, v in self.suggestions.items()}
        return _share(sent, decided, day)

    def good_share(self, path: str) -> float | None:
        good = sum(g for g, _ in self.ratings.get(path, {}).values())
        bad = sum(b for _, b in self.ratings.get(path, {}).values())
        return good / (good + bad) if good + bad else None


def _share(part: dict[str, int], whole: dict[str, int], day: str | None) -> float | None:
    if day is None:
        n, d = sum(part.values()), sum(whole.values())
    else:
        n, d = part.get(day, 0), whole.get(day, 0)
    return n / d if d else None


def _seconds(dialect: str, later: str, earlier: str) -> str:
    if dialect == "postgresql":
        return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


def _day(dialect: str, column: str) -> str:
    if dialect == "postgresql":
        return f"CAST(timezone('UTC', {column}) AS DATE)"
    return f"date({column})"


def _cases_sql(dialect: str, tenant: str | None) -> str:
    gap = _seconds(dialect, "u.msg_at", "u.prev")
    back = _seconds(dialect, "next_start", "last_at")
    waited = _seconds(dialect, ":now", "last_at")
    scoped = "AND cv.tenant = :tenant" if tenant is not None else ""
    return f"""
WITH u AS (
  SELECT m.conversation_id AS c, m.id AS id, m.created_at AS msg_at,
         LAG(m.created_at) OVER (
           PARTITION BY m.conversation_id ORDER BY m.created_at, m.id) AS prev
  FROM messages m JOIN conversations cv ON cv.id = m.conversation_id
  WHERE m.role = 'user' {scoped}
    AND cv.chat NOT IN (SELECT DISTINCT space_chat FROM tickets)
),
flagged AS (
  SELECT c, id, msg_at,
    CASE WHEN prev IS NULL OR {gap} > :idle OR EXISTS (
      SELECT 1 FROM tickets t WHERE t.conversation_id = u.c
        AND t.closed_at IS NOT NULL AND t.closed_at > u.prev AND t.closed_at <= u.msg_at
    ) THEN 1 ELSE 0 END AS starts
  FROM u
),
numbered AS (
  SELECT c, msg_at, SUM(starts) OVER (
    PARTITION BY c ORDER BY msg_at, id ROWS UNBOUNDED PRECEDING) AS n
  FROM flagged
),
spans AS (
  SELECT c, n, MIN(msg_at) AS start_at, MAX(msg_at) AS last_at FROM numbered GROUP BY c, n
),
cases AS (
  SELECT c, start_at, last_at,
    LEAD(start_at) OVER (PARTITION BY c ORDER BY n) AS next_start
  FROM spans
),
judged AS (
  SELECT start_at,
    CASE WHEN EXISTS (
      SELECT 1 FROM tickets t WHERE t.conversation_id = cases.c
        AND t.created_at >= cases.start_at
        AND (cases.next_start IS NULL OR t.created_at < cases.next_start)
    ) THEN 1 ELSE 0 END AS handed,
    CASE WHEN next_start IS NOT NULL AND {back} <= :window THEN 1 ELSE 0 END AS came_back,
    CASE WHEN {waited} >= :window THEN 1 ELSE 0 END AS window_passed
  FROM cases
)
SELECT {_day(dialect, "start_at")} AS day, COUNT(*) AS cases, SUM(handed) AS handed,
  SUM(CASE WHEN handed = 0 AND came_back = 0 AND window_passed = 1 THEN 1 ELSE 0 END) AS bot,
  SUM(CASE WHEN handed = 1 OR came_back = 1 OR window_passed = 1 THEN 1 ELSE 0 END) AS decided
FROM judged
WHERE start_at >= :since AND start_at < :until
GROUP BY {_day(dialect, "start_at")}
"""


def _ratings_sql(dialect: str, tenant: str | None) -> str:
    entries = "CAST(a.entries AS TEXT)"
    scoped = "AND r.tenant = :tenant" if tenant is not None else ""
    path = f"""
CASE WHEN r.ticket_id IS NOT NULL THEN 'agent' ELSE COALESCE((
  SELECT CASE WHEN a.path IN ('verbatim', 'grounded')
              AND {entries} LIKE '%"kind": "document"%' THEN 'documents' ELSE a.path END
  FROM faq_answers a
  WHERE a.user_id = r.user_id AND a.question = r.question AND a.created_at <= r.rated_at
  ORDER BY a.created_at DESC, a.id DESC LIMIT 1
), 'chat') END"""
    return f"""
SELECT {_day(dialect, "rated_at")} AS day, path,
  SUM(CASE WHEN score > 0 THEN 1 ELSE 0 END) AS good,
  SUM(CASE WHEN score < 0 THEN 1 ELSE 0 END) AS bad
FROM (
  SELECT r.rated_at AS rated_at, r.score AS score, {path} AS path
  FROM ratings r
  WHERE r.score IS NOT NULL AND r.rated_at >= :since AND r.rated_at < :until {scoped}
) rated
GROUP BY {_day(dialect, "rated_at")}, path
"""


def _suggestions_sql(dialect: str, tenant: str | None) -> str:
    scoped = "AND tenant = :tenant" if tenant is not None else ""
    return f"""
SELECT {_day(dialect, "created_at")} AS day,
  SUM(CASE WHEN state IN ('sent', 'edited') THEN 1 ELSE 0 END) AS sent,
  COUNT(*) AS decided
FROM suggestions
WHERE path IN ('quoted', 'written') AND state IN ('sent', 'edited', 'discarded', 'ignored')
  AND created_at >= :since AND created_at < :until {scoped}
GROUP BY {_day(dialect, "created_at")}
"""


def read_outcomes(
    conn: Connection,
    since: date,
    until: date,
    *,
    tenant: str | None,
    dialect: str,
    idle: float,
    now: datetime | None = None,
) -> Outcomes:
    """Outcomes for the UTC days ``since`` to ``until`` inclusive (``tenant``
    None: every tenant); ``idle``: seconds of silence that end a case."""
    days = [(since + timedelta(days=i)).isoformat() for i in range((until - since).days + 1)]
    out = Outcomes(days)
    stamp = DateTime(timezone=True)
    values: dict[str, Any] = {
        "since": datetime(since.year, since.month, since.day, tzinfo=UTC),
        "until": datetime(until.year, until.month, until.day, tzinfo=UTC) + timedelta(days=1),
        "now": now or datetime.now(UTC),
        "idle": float(idle),
        "window": RETURN_WINDOW.total_seconds(),
    }
    if tenant is not None:
        values["tenant"] = tenant

    def run(sql: str) -> list[Any]:
        statement = text(sql).bindparams(
            bindparam("since", type_=stamp), bindparam("until", type_=stamp)
        )
        if ":now" in sql:
            statement = statement.bindparams(bindparam("now", type_=stamp))
        wanted = {k: v for k, v in values.items() if f":{k}" in sql}
        return list(conn.execute(statement, wanted))

    for row in run(_cases_sql(dialect, tenant)):
        day = str(row.day)
        out.cases[day] = int(row.cases)
        out.handed_off[day] = int(row.handed or 0)
        out.bot_resolved[day] = int(row.bot or 0)
        out.decided[day] = int(row.decided or 0)
    ratings: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    for row in run(_ratings_sql(dialect, tenant)):
        ratings[str(row.path)][str(row.day)] = (int(row.good or 0), int(row.bad or 0))
    out.ratings = {p: ratings[p] for p in RATING_PATHS if p in ratings}
    for row in run(_suggestions_sql(dialect, tenant)):
        out.suggestions[str(row.day)] = (int(row.sent or 0), int(row.decided))
    return out
