"""The overview's outcomes, computed in SQL on a seeded database, each figure
checked against a count by hand (the comments say which rows make it)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert

from storage.console_outcomes import Outcomes, read_outcomes
from storage.models import conversations, faq_answers, messages, ratings, suggestions, tickets
from storage.repository import Repository

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
D1 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)  # every case on day 1 has its 7 days behind it
D2 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
D3 = datetime(2026, 3, 18, 9, 0, tzinfo=UTC)  # two days before NOW: not decided yet
IDLE = 3600.0  # an hour of silence ends a case
MIN = timedelta(minutes=1)


def _seed(conn: Connection) -> None:
    def conversation(cid: int, tenant: str, chat: str) -> None:
        conn.execute(
            insert(conversations).values(
                id=cid, platform="test", tenant=tenant, chat=chat, created_at=D1
            )
        )

    def said(cid: int, at: datetime, role: str = "user") -> None:
        conn.execute(
            insert(messages).values(
                conversation_id=cid, role=role, user_id=f"u{cid}", text="hi", created_at=at
            )
        )

    def ticket(tid: int, cid: int, opened: datetime, closed: datetime | None) -> None:
        conn.execute(
            insert(tickets).values(
                id=tid,
                conversation_id=cid,
                state="closed" if closed else "human",
                trigger="request",
                details={},
                space="slack:T1/C1",
                space_chat="SPACE",
                created_at=opened,
                first_reply_at=opened + 5 * MIN,
                last_activity_at=opened,
                closed_at=closed,
            )
        )

    for cid, tenant, chat in [
        (1, "t1", "a"),
        (2, "t1", "b"),
        (3, "t1", "c"),
        (4, "t2", "d"),
        (5, "t1", "e"),
        (9, "T1", "SPACE"),
    ]:
        conversation(cid, tenant, chat)
    # Conversation 1 (t1): a case answered by the bot on day 1 (two messages a
    # minute apart), nothing for 7 days after: resolved by the bot.
    said(1, D1)
    said(1, D1 + MIN, "assistant")
    said(1, D1 + 2 * MIN)
    # Conversation 2 (t1): a case on day 1 handed off (ticket opened, resolved),
    # then a new case after the resolution on day 2, 30 minutes apart from the
    # last message but after the resolution: two cases. The second is not
    # handed off and the customer comes back 2 hours later on day 2 (a third
    # case after the idle hour), so the second is not the bot's.
    said(2, D1 + 10 * MIN)
    ticket(1, 2, D1 + 11 * MIN, D2 - 10 * MIN)
    said(2, D1 + 20 * MIN)
    said(2, D2 - 5 * MIN)  # after the resolution: case 2 (day 2, 08:55)
    said(2, D2 + 2 * 60 * MIN)  # after an idle hour: case 3, nothing after it
    # Conversation 3 (t1): a case on day 3, too recent to be decided.
    said(3, D3)
    # Conversation 4 (t2): one case on day 1, handed off.
    said(4, D1 + 30 * MIN)
    ticket(2, 4, D1 + 31 * MIN, None)
    # Conversation 5 (t1): a case on day 2 whose customer comes back 3 days
    # later (a new case, on a day outside the period).
    said(5, D2)
    said(5, D2 + timedelta(days=3))
    # The support space's own messages are nobody's case.
    said(9, D1)
    said(9, D2)

    # Ratings (rated on day 2): an agent's ticket 👍 (t1), a verbatim answer 👎
    # (t1), a documents answer 👍 (t1), a plain-chat answer 👍 (t2).
    def answer(user: str, question: str, path: str, entries: list[dict[str, Any]]) -> None:
        conn.execute(
            insert(faq_answers).values(
                tenant="t1",
                question=question,
                path=path,
                entries=entries,
                answer="...",
                user_id=user,
                created_at=D1,
            )
        )

    answer("test:u1", "hours?", "verbatim", [{"id": 1, "ref": "1", "question": "hours?"}])
    answer("test:u3", "returns?", "grounded", [{"kind": "document", "ref": "document:r"}])

    def rated(tenant: str, user: str, question: str, score: int, ticket_id: int | None) -> None:
        conn.execute(
            insert(ratings).values(
                tenant=tenant,
                conversation_id=1,
                ticket_id=ticket_id,
                user_id=user,
                question=question,
                score=score,
                created_at=D2,
                rated_at=D2,
            )
        )

    rated("t1", "test:u2", "", 1, 1)
    rated("t1", "test:u1", "hours?", -1, None)
    rated("t1", "test:u3", "returns?", 1, None)
    rated("t2", "test:u4", "weather?", 1, None)

    # Suggestions drafted on day 1 (t1): sent, edited, discarded, ignored,
    # still pending, and one the knowledge could not support.
    for n, (state, path) in enumerate(
        [
            ("sent", "quoted"),
            ("edited", "written"),
            ("discarded", "quoted"),
            ("ignored", "quoted"),
            ("pending", "quoted"),
            ("unsupported", "unsupported"),
        ]
    ):
        conn.execute(
            insert(suggestions).values(
                ticket_id=1,
                conversation_id=2,
                tenant="t1",
                cause=f"message:{n}",
                path=path,
                sources=[],
                state=state,
                created_at=D1 + n * MIN,
            )
        )


async def _outcomes(repository: Repository, tenant: str | None) -> Outcomes:
    return await repository.db.run(
        lambda conn: read_outcomes(
            conn,
            date(2026, 3, 1),
            date(2026, 3, 19),
            tenant=tenant,
            dialect=repository.db.dialect,
            idle=IDLE,
            now=NOW,
        )
    )


async def test_outcomes_match_a_hand_count(repository: Repository) -> None:
    await repository.db.run(_seed)
    every = await _outcomes(repository, None)
    day1, day2, day3 = "2026-03-01", "2026-03-02", "2026-03-18"
    # Day 1: conversation 1, conversation 2's first case, conversation 4.
    # Day 2: conversation 2's second and third cases, conversation 5's first.
    # Day 3: conversation 3. (Conversation 5's return on 03-05 is a case too.)
    assert every.cases == {day1: 3, day2: 3, day3: 1, "2026-03-05": 1}
    assert every.handed_off == {day1: 2, day2: 0, day3: 0, "2026-03-05": 0}
    # Bot-resolved: conversation 1 (day 1); conversation 2's third case (day 2;
    # nothing followed). Conversation 2's second case came back within 7 days,
    # and so did conversation 5's first.
    assert every.bot_resolved == {day1: 1, day2: 1, day3: 0, "2026-03-05": 1}
    # Decided: all but the two cases whose window has not passed (day 3; 03-05
    # is 15 days before NOW, so it is decided).
    assert every.decided == {day1: 3, day2: 3, day3: 0, "2026-03-05": 1}
    assert every.handoff_rate() == 2 / 8
    assert every.bot_share() == 3 / 7
    assert every.handoff_rate(day1) == 2 / 3

    assert every.ratings == {
        "documents": {day2: (1, 0)},
        "verbatim": {day2: (0, 1)},
        "agent": {day2: (1, 0)},
        "chat": {day2: (1, 0)},
    }
    assert every.good_share("verbatim") == 0.0 and every.good_share("agent") == 1.0
    # Sent 1 + edited 1 of 4 decided (pending and unsupported do not count).
    assert every.suggestions == {day1: (2, 4)}
    assert every.acceptance() == 0.5

    t2 = await _outcomes(repository, "t2")
    assert t2.cases == {day1: 1} and t2.handed_off == {day1: 1}
    assert t2.ratings == {"chat": {day2: (1, 0)}}
    assert t2.suggestions == {} and t2.acceptance() is None
