"""The console's storage on SQLite and PostgreSQL: sign-in links, sessions, reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.handoff import actions
from bot.handoff.actions import Actor
from bot.handoff.config import HandoffSettings, parse_spaces
from bot.handoff.desk import HelpDesk
from storage.console_repo import ConsoleRepository
from storage.handoff_repo import HandoffRepository
from storage.repository import ConversationAddress, InboundEvent, Repository


async def test_a_link_signs_in_once_and_only_before_it_expires(repository: Repository) -> None:
    repo = ConsoleRepository(repository.db)
    await repo.create_link("fresh-link", valid_for=timedelta(minutes=5))
    await repo.create_link("stale-link", valid_for=timedelta(seconds=-1))
    assert await repo.use_link("fresh-link")
    assert not await repo.use_link("fresh-link")
    assert not await repo.use_link("stale-link")
    assert not await repo.use_link("never-issued")


async def test_sessions_keep_their_csrf_token_until_they_end(repository: Repository) -> None:
    repo = ConsoleRepository(repository.db)
    await repo.create_session("cookie-1", csrf="csrf-1", via="link", valid_for=timedelta(hours=1))
    await repo.create_session("cookie-2", csrf="csrf-2", via="token", valid_for=timedelta(0))
    found = await repo.session("cookie-1")
    assert found is not None and found.csrf == "csrf-1" and found.via == "link"
    assert await repo.session("cookie-2") is None, "expired"
    await repo.end_session("cookie-1")
    assert await repo.session("cookie-1") is None


async def test_overview_counts_by_day_and_a_console_reply_is_relayed_once(
    repository: Repository,
) -> None:
    repo = ConsoleRepository(repository.db)
    where = ConversationAddress("telegram", "bot1", "42")
    stored = await repository.accept(
        InboundEvent(where, "ev-1", "telegram:42", "where is my parcel?", "Ann"), kind="chat"
    )
    await repository.record_answer(stored, text="On its way.", kind="chat", latency_ms=250)
    tickets = HandoffRepository(repository.db)
    desk = HelpDesk(
        settings=HandoffSettings(spaces=parse_spaces("telegram:-100"), signature="Team"),
        tickets=tickets,
    )
    ticket, _ = await tickets.open_ticket(
        stored.conversation_id,
        trigger="request",
        customer="telegram:42",
        customer_name="Ann",
        space="telegram:-100",
        space_chat="-100",
        details={},
    )
    for _ in range(2):  # a double submit
        await actions.reply(
            desk, ticket, Actor.at_console("slack:T1/U7", "Robin", "act-000001"), "Hi"
        )
    to_customer = [r for r in await tickets.outbox_rows() if r["kind"] == "to_customer"]
    assert [r["text"] for r in to_customer] == ["Team: Hi"]

    today = datetime.now(UTC).date()
    figures = await repo.overview(today - timedelta(days=1), today, tenant="bot1")
    assert figures.days[-1] == today.isoformat()
    assert figures.conversations == {"telegram": {today.isoformat(): 1}}
    assert figures.messages == {"telegram": {today.isoformat(): 2}}
    assert figures.latency[today.isoformat()] == (250.0, 250.0)
    assert figures.answered["person"] == {today.isoformat(): 1}
    assert figures.tickets_opened == 1 and figures.tickets_unanswered == 0
    assert (await repo.overview(today, today, tenant="other")).total_messages == 0
    [row] = await repo.find_conversations(text="PARCEL", platform="telegram")
    assert row.users == ("telegram:42",) and row.messages == 2
    assert await repo.find_conversations(text="100%") == []
