"""Telegram faults through the whole stack in one process: real PTB against the
fake Bot API, the real manager over SQLite, the scripted model."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from sqlalchemy import select

from bot.manager import ConversationManager
from llm.fake import FakeBackend
from storage.models import inbound_events
from tests.e2e.test_telegram_adapter import make_adapter
from tests.fakes.telegram_api import FakeTelegram


async def _statuses(manager: ConversationManager) -> dict[int, str]:
    """The stored status of each update, by update_id."""
    query = select(inbound_events.c.event_id, inbound_events.c.status)
    rows = await manager.repository.db.run(lambda conn: conn.execute(query).all())
    return {int(str(event_id).split(":")[0]): str(status) for event_id, status in rows}


async def test_offset_after_a_stop_mid_batch_is_the_last_stored_update(
    fake: FakeTelegram, manager: ConversationManager, tmp_path: Path
) -> None:
    adapter = make_adapter(fake)
    await adapter.start(manager)
    locker = sqlite3.connect(tmp_path / "deskmate.db", isolation_level=None)
    stopping: asyncio.Task[None] | None = None
    try:
        await fake.wait_for(lambda: fake.long_polls == 1, what="a waiting long poll")
        # Three updates reach the bot in one getUpdates answer, while another
        # connection holds the database locked: the first waits to be stored.
        locker.execute("BEGIN EXCLUSIVE")
        chats = (51, 52, 53)
        batch = [fake.send_user_message(chat, f"question {chat}") for chat in chats]
        await fake.wait_for(lambda: fake.long_polls == 0, what="the batch fetched")
        await asyncio.sleep(0.5)
        # The adapter is told to stop in the middle of the batch.
        stopping = asyncio.create_task(adapter.stop())
        await asyncio.sleep(0.3)
        assert not stopping.done()
        locker.execute("ROLLBACK")
        await asyncio.wait_for(stopping, 20)
    finally:
        locker.close()
        if stopping is None:
            await adapter.stop()
    first, second, third = (update["update_id"] for update in batch)
    stored = await _statuses(manager)
    # The update being stored when the stop came was finished; the ones after
    # it were fetched but never stored, so they are not confirmed.
    assert first in stored and second not in stored and third not in stored
    assert fake.confirmed_offset == first + 1
    assert [u["update_id"] for u in fake.queued] == [second, third]

    # The next start gets the unconfirmed update again; each is answered once.
    restarted = make_adapter(fake)
    await restarted.start(manager)
    try:
        await fake.wait_for(lambda: all(fake.texts(c) for c in chats), what="every answer")
        await asyncio.sleep(0.5)  # room for a duplicate to show up
    finally:
        await restarted.stop()
    for chat in chats:
        assert fake.texts(chat) == [f"echo: question {chat}"]
    assert fake.confirmed_offset == third + 1


async def test_a_429_on_an_edit_mid_stream_still_completes_the_answer(
    fake: FakeTelegram, manager: ConversationManager, backend: FakeBackend
) -> None:
    words = [f"word{i}" for i in range(12)]
    backend.enqueue(" ".join(words), chunk_delay=0.15)
    adapter = make_adapter(fake)
    await adapter.start(manager)
    try:
        update = fake.send_user_message(42, "tell me a long story")
        await fake.wait_for(lambda: bool(fake.texts(42)), what="the first part shown")
        assert fake.texts(42)[0] != " ".join(words)
        # Telegram's flood control answers the next edit with 429 retry_after.
        fake.rate_limit(42, retry_after=1)
        await fake.wait_for(
            lambda: fake.texts(42) == [" ".join(words)], within=15, what="the whole answer"
        )
        await adapter.answers.wait_idle()
    finally:
        await adapter.stop()
    edits = fake.calls_to("editMessageText", 42)
    refused = [i for i, call in enumerate(edits) if call.error.startswith("Too Many Requests")]
    assert len(refused) == 1 and refused[0] < len(edits) - 1, "a later edit went through"
    # The next edit waited out retry_after.
    assert edits[refused[0] + 1].at - edits[refused[0]].at >= 0.95
    assert len(fake.calls_to("sendMessage", 42)) == 1, "the answer stayed in its one message"
    assert (await _statuses(manager))[update["update_id"]] == "answered"
