"""The Telegram adapter in process: real PTB, real manager and SQLite, fake Bot API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import func, select

from adapters.telegram import TelegramAdapter
from bot.errors import StorageError
from bot.manager import ConversationManager
from bot.messages import say
from bot.types import ConversationRef
from llm.fake import FakeBackend
from storage.db import Database
from storage.models import conversations, inbound_events
from storage.repository import ConversationAddress, Repository
from tests.conftest import make_manager
from tests.fakes.telegram_api import FakeTelegram

SECRET = "s3cret-Token_1"


def make_adapter(fake: FakeTelegram, **overrides: object) -> TelegramAdapter:
    options: dict[str, object] = {
        "token": fake.token,
        "api_url": fake.api_url,
        "edit_interval": 0.2,
        "typing_interval": 0.5,
        "poll_timeout": 1,
        "per_chat_interval": 0.05,
        "group_interval": 0.05,
        "stop_timeout": 5,
        "request_timeout": 2,
        "retry_delay": 0.1,
    }
    options.update(overrides)
    return TelegramAdapter(**options)  # type: ignore[arg-type]


@pytest.fixture
async def polling(
    fake: FakeTelegram, manager: ConversationManager
) -> AsyncIterator[TelegramAdapter]:
    adapter = make_adapter(fake)
    await adapter.start(manager)
    yield adapter
    await adapter.stop()


async def stored_events(manager: ConversationManager) -> int:
    query = select(func.count()).select_from(inbound_events)
    return await manager.repository.db.run(lambda conn: conn.execute(query).scalar_one())


async def test_private_chat_is_answered_and_commands_published(
    fake: FakeTelegram, polling: TelegramAdapter
) -> None:
    fake.send_user_message(42, "Where is my parcel?")
    await fake.wait_for(lambda: fake.texts(42) == ["echo: Where is my parcel?"], what="reply")
    assert fake.calls_to("deleteWebhook")
    menu = {c["command"] for c in fake.commands}
    assert {"help", "reset"} <= menu
    assert "stats" not in menu  # admin commands stay out of the menu
    # One list per shipped language, for users whose app is set to it.
    assert set(fake.commands_in) == {"", "en", "sv", "de", "es", "fr", "zh"}
    described = {c["command"]: c["description"] for c in fake.commands_in["sv"]}
    assert described["help"] == say("commands.describe.help", "sv") != say("commands.describe.help")


async def test_redelivered_update_gets_one_reply(
    fake: FakeTelegram, polling: TelegramAdapter, manager: ConversationManager
) -> None:
    update = fake.send_user_message(42, "hello")
    await fake.wait_for(lambda: len(fake.texts(42)) == 1, what="first reply")
    fake.repush(update)  # Telegram sends it again (e.g. our ack was lost)
    await fake.wait_for(lambda: fake.confirmed_offset > update["update_id"] and not fake.queued)
    fake.send_user_message(42, "second")
    await fake.wait_for(lambda: len(fake.texts(42)) == 2, what="second reply")
    await asyncio.sleep(0.3)
    assert fake.texts(42) == ["echo: hello", "echo: second"]
    assert await stored_events(manager) == 2


async def test_group_answers_only_when_addressed(
    fake: FakeTelegram, polling: TelegramAdapter, manager: ConversationManager
) -> None:
    group = -1001234
    fake.send_user_message(group, "does anyone know the opening hours?")
    asked = fake.send_user_message(group, "@deskmate_bot what are the opening hours?")
    await fake.wait_for(lambda: len(fake.texts(group)) == 1, what="group reply")
    [answer] = fake.messages[group]
    assert answer.text == "echo: what are the opening hours?"
    assert answer.reply_to == asked["message"]["message_id"]
    bot_message = fake._message_json(answer)
    fake.send_user_message(group, "and on sundays?", reply_to=bot_message)
    fake.send_user_message(group, "/help@deskmate_bot")
    fake.send_user_message(group, "/help@other_bot")
    await fake.wait_for(lambda: len(fake.texts(group)) == 3, what="reply and command")
    await asyncio.sleep(0.3)
    texts = fake.texts(group)
    assert texts[1] == "echo: and on sundays?"
    assert texts[2].startswith("Here is what I can do")
    # Messages not addressed to the bot are not even stored.
    assert await stored_events(manager) == 3


async def test_forum_topics_are_answered_in_their_topic(
    fake: FakeTelegram, polling: TelegramAdapter
) -> None:
    forum = -1005
    fake.send_user_message(forum, "@deskmate_bot refund please", thread_id=11)
    fake.send_user_message(forum, "@deskmate_bot invoice please", thread_id=12)
    await fake.wait_for(lambda: len(fake.texts(forum)) == 2, what="topic replies")
    by_thread = {m.thread_id: m.text for m in fake.messages[forum]}
    assert by_thread == {11: "echo: refund please", 12: "echo: invoice please"}


async def test_blocked_user_makes_conversation_inactive(
    fake: FakeTelegram, polling: TelegramAdapter, manager: ConversationManager
) -> None:
    ref = ConversationRef("telegram", str(fake.bot_id), "42")
    fake.send_user_message(42, "hi")
    await fake.wait_for(lambda: len(fake.texts(42)) == 1)
    fake.block(42)
    fake.send_user_message(42, "hi again")
    await fake.wait_for(lambda: bool(fake.calls_to("sendMessage", 42)[1:]), what="second send")
    stored = ConversationAddress(ref.platform, ref.tenant, ref.chat)
    for _ in range(50):
        if not await manager.repository.is_active(stored):
            break
        await asyncio.sleep(0.05)
    assert not await manager.repository.is_active(stored)
    assert len(fake.calls_to("sendMessage", 42)) == 2  # no retry loop


async def test_group_migration_moves_the_conversation(
    fake: FakeTelegram, polling: TelegramAdapter, manager: ConversationManager
) -> None:
    fake.send_user_message(-77, "@deskmate_bot first question", chat_type="group")
    await fake.wait_for(lambda: len(fake.texts(-77)) == 1)
    fake.migrate(-77, -1000077)
    fake.send_user_message(-77, "@deskmate_bot second question", chat_type="group")
    await fake.wait_for(lambda: len(fake.texts(-1000077)) == 1, what="reply in new chat")
    assert fake.texts(-1000077) == ["echo: second question"]
    new = ConversationRef("telegram", str(fake.bot_id), "-1000077")
    query = select(conversations.c.chat)
    chats = await manager.repository.db.run(lambda conn: conn.execute(query).scalars().all())
    assert list(chats) == [new.chat]


async def test_stored_but_unanswered_updates_are_answered_at_start(
    fake: FakeTelegram, manager: ConversationManager, backend: FakeBackend
) -> None:
    from adapters.telegram.convert import BotIdentity, update_to_inbound

    me = BotIdentity(fake.bot_id, fake.username)
    for text in ("left over one", "left over two"):
        inbound = update_to_inbound(fake.message_update(42, text), me=me)
        assert inbound is not None
        await manager.accept(inbound)  # stored, then the process "died"
    # The next process: its own repository over the same database.
    url = manager.repository.db.url.render_as_string(hide_password=False)
    restarted = make_manager(Repository(Database(url)), backend)
    adapter = make_adapter(fake)
    await adapter.start(restarted)
    try:
        await fake.wait_for(lambda: len(fake.texts(42)) == 2, what="replayed replies")
    finally:
        await adapter.stop()
        await restarted.repository.aclose()
    assert fake.texts(42) == ["echo: left over one", "echo: left over two"]


async def test_storage_failure_leaves_update_unconfirmed(
    fake: FakeTelegram,
    manager: ConversationManager,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_accept = manager.accept
    failures = 0

    async def flaky_accept(inbound):  # type: ignore[no-untyped-def]
        nonlocal failures
        if failures < 2:
            failures += 1
            raise StorageError("database is locked")
        return await real_accept(inbound)

    monkeypatch.setattr(manager, "accept", flaky_accept)
    adapter = make_adapter(fake)
    await adapter.start(manager)
    try:
        update = fake.send_user_message(42, "are you there?")
        await fake.wait_for(lambda: len(fake.texts(42)) == 1, what="reply after retries")
        offsets = [c.params.get("offset") for c in fake.calls_to("getUpdates")]
    finally:
        await adapter.stop()
    assert failures == 2
    # The update stayed unconfirmed until it was stored.
    assert offsets.count(update["update_id"] + 1) >= 1
    assert fake.texts(42) == ["echo: are you there?"]


async def test_stop_finishes_the_reply_in_hand(
    fake: FakeTelegram, manager: ConversationManager, backend: FakeBackend
) -> None:
    backend.enqueue("slow answer arriving in pieces", chunk_delay=0.15)
    adapter = make_adapter(fake)
    await adapter.start(manager)
    fake.send_user_message(42, "question")
    await fake.wait_for(lambda: bool(fake.calls_to("sendChatAction", 42)), what="typing")
    await adapter.stop()
    assert fake.texts(42) == ["slow answer arriving in pieces"]


# -- webhook ---------------------------------------------------------------------


@pytest.fixture
async def webhook(
    fake: FakeTelegram, manager: ConversationManager, unused_tcp_port: int
) -> AsyncIterator[TelegramAdapter]:
    url = f"http://127.0.0.1:{unused_tcp_port}/telegram/webhook"
    adapter = make_adapter(fake, webhook_url=url, webhook_secret=SECRET)
    app = web.Application()
    app.router.add_route("POST", "/telegram/webhook", adapter.handle_webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    await adapter.start(manager)
    yield adapter
    await adapter.stop()
    await runner.cleanup()


async def test_webhook_is_registered_with_the_secret(
    fake: FakeTelegram, webhook: TelegramAdapter
) -> None:
    assert fake.webhook is not None
    assert fake.webhook["secret_token"] == SECRET
    assert fake.webhook["url"].endswith("/telegram/webhook")


async def test_webhook_refuses_a_wrong_or_missing_secret(
    fake: FakeTelegram, webhook: TelegramAdapter, manager: ConversationManager
) -> None:
    update = fake.message_update(42, "forged")
    assert (await fake.deliver_webhook(update, secret="wrong"))[0] == 403
    assert (await fake.deliver_webhook(update, secret=None))[0] == 403
    assert await stored_events(manager) == 0
    await asyncio.sleep(0.2)
    assert fake.calls_to("sendMessage") == []


async def test_webhook_stores_then_answers_once(
    fake: FakeTelegram, webhook: TelegramAdapter, manager: ConversationManager
) -> None:
    update = fake.message_update(42, "via webhook")
    status, _ = await fake.deliver_webhook(update, secret=SECRET)
    assert status == 200
    assert await stored_events(manager) == 1
    await fake.wait_for(lambda: fake.texts(42) == ["echo: via webhook"])
    # Telegram redelivers (it did not see our 200): no second answer.
    assert (await fake.deliver_webhook(update, secret=SECRET))[0] == 200
    await asyncio.sleep(0.3)
    assert fake.texts(42) == ["echo: via webhook"]


async def test_webhook_answers_500_when_storage_fails(
    fake: FakeTelegram,
    webhook: TelegramAdapter,
    manager: ConversationManager,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_accept = manager.accept

    async def broken(inbound):  # type: ignore[no-untyped-def]
        raise StorageError("disk full")

    monkeypatch.setattr(manager, "accept", broken)
    update = fake.message_update(42, "lost?")
    assert (await fake.deliver_webhook(update, secret=SECRET))[0] == 500
    monkeypatch.setattr(manager, "accept", real_accept)
    assert (await fake.deliver_webhook(update, secret=SECRET))[0] == 200
    await fake.wait_for(lambda: fake.texts(42) == ["echo: lost?"])


async def test_webhook_refuses_a_body_that_is_not_json(
    fake: FakeTelegram, webhook: TelegramAdapter, manager: ConversationManager
) -> None:
    """An update sent as anything but application/json, even with the right
    secret and a well-formed body, is refused with 415 and never stored."""
    from aiohttp import ClientSession

    assert fake.webhook is not None
    body = json.dumps(fake.message_update(42, "sent as text"))
    async with ClientSession() as session:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
            if content_type is not None:
                headers["Content-Type"] = content_type
            data = body.encode() if content_type is None else body
            async with session.post(fake.webhook["url"], data=data, headers=headers) as resp:
                assert resp.status == 415, content_type
                assert await resp.json() == {"error": "send application/json"}
    assert await stored_events(manager) == 0
    await asyncio.sleep(0.2)
    assert fake.calls_to("sendMessage") == []
    # The same update as JSON is taken.
    update = json.loads(body)
    assert (await fake.deliver_webhook(update, secret=SECRET))[0] == 200
    await fake.wait_for(lambda: fake.texts(42) == ["echo: sent as text"])


async def test_webhook_rejects_garbage(fake: FakeTelegram, webhook: TelegramAdapter) -> None:
    from aiohttp import ClientSession

    assert fake.webhook is not None
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}
    async with ClientSession() as session:
        async with session.post(fake.webhook["url"], data="{not json", headers=headers) as resp:
            assert resp.status == 400
        async with session.post(fake.webhook["url"], json={"hello": 1}, headers=headers) as resp:
            assert resp.status == 400


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"update_id": 1, "text": "\xff"}', "application/json"),
        (b'{"update_id": 1}', "application/json; charset=foo"),
    ],
    ids=["invalid-utf8", "unknown-charset"],
)
async def test_webhook_rejects_an_unreadable_body(
    fake: FakeTelegram, webhook: TelegramAdapter, body: bytes, content_type: str
) -> None:
    from aiohttp import ClientSession

    assert fake.webhook is not None
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": content_type}
    async with (
        ClientSession() as session,
        session.post(fake.webhook["url"], data=body, headers=headers) as resp,
    ):
        assert resp.status == 400


async def test_long_answer_through_the_manager_arrives_in_order(
    fake: FakeTelegram, polling: TelegramAdapter, backend: FakeBackend
) -> None:
    paragraphs = [f"Step {i}: " + "check the settings page and save. " * 12 for i in range(25)]
    answer = "\n\n".join(paragraphs)[:10_000].rstrip()
    backend.enqueue(answer)
    fake.send_user_message(42, "explain everything")
    await fake.wait_for(lambda: "".join(fake.texts(42)) == answer, what="the whole answer")
    texts = fake.texts(42)
    assert len(texts) == 3
    assert all(len(t) <= 4096 for t in texts)
    assert all(t.endswith("\n\n") for t in texts[:-1])  # cut between paragraphs


async def test_flood_wait_in_one_chat_does_not_hold_up_another(
    fake: FakeTelegram, polling: TelegramAdapter
) -> None:
    fake.rate_limit(42, retry_after=2)
    fake.send_user_message(42, "first chat")
    fake.send_user_message(43, "second chat")
    await fake.wait_for(lambda: bool(fake.texts(43)), what="the other chat")
    assert fake.texts(42) == []
    await fake.wait_for(lambda: bool(fake.texts(42)), what="the limited chat")
    sends = fake.calls_to("sendMessage", 42)
    assert sends[1].at - sends[0].at >= 2.0
    assert fake.messages[43][0].sent_at < fake.messages[42][0].sent_at - 1.5


async def test_operator_mistakes_get_clear_errors(
    fake: FakeTelegram, manager: ConversationManager
) -> None:
    from adapters.telegram.adapter import TelegramUnavailable
    from bot.errors import ConfigError

    with pytest.raises(ConfigError, match="TELEGRAM_WEBHOOK_SECRET may only use"):
        make_adapter(
            fake,
            webhook_url="https://bot.example.com/telegram/webhook",
            webhook_secret="has spaces!",
        )
    with pytest.raises(ConfigError, match="refused TELEGRAM_BOT_TOKEN"):
        await make_adapter(fake, token="999:wrong").start(manager)
    with pytest.raises(TelegramUnavailable, match=r"127\.0\.0\.1:1"):
        await make_adapter(fake, api_url="http://127.0.0.1:1").start(manager)


async def test_outbox_send_splits_and_reports_a_blocked_user(
    fake: FakeTelegram, polling: TelegramAdapter, manager: ConversationManager
) -> None:
    from adapters.telegram.render import ChatGone

    ref = ConversationRef("telegram", str(fake.bot_id), "42")
    fake.send_user_message(42, "hi")
    await fake.wait_for(lambda: len(fake.texts(42)) == 1)
    relayed = "An agent says: " + "your refund is on its way. " * 300
    await polling.send(ref, relayed)
    assert "".join(fake.texts(42)[1:]) == relayed
    assert len(fake.texts(42)) == 3
    fake.block(42)
    with pytest.raises(ChatGone):
        await polling.send(ref, "are you still there?")
    stored = ConversationAddress(ref.platform, ref.tenant, ref.chat)
    assert not await manager.repository.is_active(stored)


# -- Telegram at run time ------------------------------------------------------------


async def test_another_poller_is_named_plainly_in_the_log(
    fake: FakeTelegram, polling: TelegramAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    from aiohttp import ClientSession

    await fake.wait_for(lambda: fake.long_polls == 1, what="a waiting long poll")
    # A second deployment polls with the same token: Telegram ends our poll with 409.
    async with ClientSession() as session:
        url = f"{fake.api_url}/bot{fake.token}/getUpdates"
        async with session.post(url, json={"timeout": 0}) as resp:
            assert resp.status == 200
    await fake.wait_for(
        lambda: any("409 Conflict" in r.getMessage() for r in caplog.records), what="the log"
    )
    [record] = [r for r in caplog.records if "409 Conflict" in r.getMessage()]
    message = record.getMessage()
    assert record.levelname == "ERROR"
    assert "another process is polling" in message
    assert "webhook is set for it elsewhere" in message
    assert "deleteWebhook" in message and "TELEGRAM_WEBHOOK_URL" in message
    # Polling goes on once the other consumer is gone.
    fake.send_user_message(42, "still there?")
    await fake.wait_for(lambda: fake.texts(42) == ["echo: still there?"], what="reply")


async def test_a_new_update_id_sequence_is_not_taken_for_redeliveries(
    fake: FakeTelegram, manager: ConversationManager
) -> None:
    adapter = make_adapter(fake)
    await adapter.start(manager)
    try:
        old = fake.send_user_message(42, "first, a week ago")
        await fake.wait_for(lambda: len(fake.texts(42)) == 1, what="first reply")
    finally:
        await adapter.stop()
    # A week without updates: Telegram starts a new, lower update_id sequence.
    fake.reset_update_ids(old["update_id"])
    adapter = make_adapter(fake)
    await adapter.start(manager)
    try:
        new = fake.send_user_message(42, "a new question")
        assert new["update_id"] == old["update_id"]
        await fake.wait_for(lambda: len(fake.texts(42)) == 2, what="the new reply")
        fake.repush(new)  # and a genuine redelivery of it is still recognised
        await fake.wait_for(lambda: not fake.queued, what="redelivery confirmed")
        await asyncio.sleep(0.3)
    finally:
        await adapter.stop()
    assert fake.texts(42) == ["echo: first, a week ago", "echo: a new question"]
    assert await stored_events(manager) == 2


async def test_webhook_takes_a_reused_update_id_for_a_new_message(
    fake: FakeTelegram, webhook: TelegramAdapter, manager: ConversationManager
) -> None:
    first = fake.message_update(42, "before the reset")
    assert (await fake.deliver_webhook(first, secret=SECRET))[0] == 200
    await fake.wait_for(lambda: len(fake.texts(42)) == 1)
    fake.reset_update_ids(first["update_id"] - 1)
    fake.message_update(42, "never delivered")  # the new sequence moved on meanwhile
    second = fake.message_update(42, "after the reset")
    assert second["update_id"] == first["update_id"]
    assert (await fake.deliver_webhook(second, secret=SECRET))[0] == 200
    assert (await fake.deliver_webhook(second, secret=SECRET))[0] == 200  # redelivered
    await fake.wait_for(lambda: len(fake.texts(42)) == 2, what="the second reply")
    await asyncio.sleep(0.3)
    assert fake.texts(42) == ["echo: before the reset", "echo: after the reset"]
    assert await stored_events(manager) == 2


# -- a send that timed out on read ---------------------------------------------------


async def event_statuses(manager: ConversationManager) -> list[str]:
    query = select(inbound_events.c.status)
    return list(await manager.repository.db.run(lambda conn: conn.execute(query).scalars().all()))


@pytest.mark.parametrize("applied", [True, False], ids=["arrived", "lost"])
async def test_timed_out_send_still_delivers_the_whole_answer(
    fake: FakeTelegram, manager: ConversationManager, backend: FakeBackend, applied: bool
) -> None:
    backend.enqueue("Your refund was sent on Monday.", chunk_delay=0.1)
    adapter = make_adapter(fake, request_timeout=1)
    await adapter.start(manager)
    try:
        fake.stall("sendMessage", 1.5, apply=applied)
        fake.send_user_message(42, "where is my refund?")
        await fake.wait_for(
            lambda: fake.texts(42) == ["Your refund was sent on Monday."], what="the answer"
        )
        await adapter.answers.wait_idle()
    finally:
        await adapter.stop()
    assert await event_statuses(manager) == ["answered"]


async def test_send_whose_fate_stays_unknown_is_recorded_failed(
    fake: FakeTelegram, manager: ConversationManager, backend: FakeBackend
) -> None:
    backend.enqueue("Your refund was sent on Monday.", chunk_delay=0.1)
    adapter = make_adapter(fake, request_timeout=1)
    await adapter.start(manager)
    try:
        # Telegram loses the send and the one repeated after looking for it.
        fake.stall("sendMessage", 1.5, times=2, apply=False)
        fake.send_user_message(42, "where is my refund?")
        await fake.wait_for(lambda: len(fake.calls_to("sendMessage", 42)) == 2, what="resend")
        await adapter.answers.wait_idle()
    finally:
        await adapter.stop()
    assert fake.texts(42) == []
    assert await event_statuses(manager) == ["failed"]


# -- the database fails: nothing is confirmed that was not stored ----------------------


async def test_polling_does_not_confirm_what_a_locked_database_did_not_store(
    fake: FakeTelegram, manager: ConversationManager, tmp_path: Path
) -> None:
    import sqlite3

    db = manager.repository.db
    # Wait 0.2 s for a lock instead of 30 s, so the test sees several refusals.
    await db.run(lambda conn: conn.exec_driver_sql("PRAGMA busy_timeout=200"))
    adapter = make_adapter(fake)
    await adapter.start(manager)
    locker = sqlite3.connect(tmp_path / "deskmate.db", isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        update = fake.send_user_message(42, "are you there?")
        polls = len(fake.calls_to("getUpdates"))
        await fake.wait_for(
            lambda: len(fake.calls_to("getUpdates")) >= polls + 3, what="polls while locked"
        )
        # Fetched again and again, never confirmed, never answered.
        assert fake.confirmed_offset <= update["update_id"]
        assert [u["update_id"] for u in fake.queued] == [update["update_id"]]
        assert fake.texts(42) == []
        locker.execute("ROLLBACK")
        await fake.wait_for(lambda: fake.texts(42) == ["echo: are you there?"], what="reply")
        await fake.wait_for(lambda: fake.confirmed_offset > update["update_id"], what="confirm")
        await asyncio.sleep(0.5)
    finally:
        locker.close()
        await adapter.stop()
    assert fake.texts(42) == ["echo: are you there?"]
    assert await stored_events(manager) == 1


@pytest.mark.postgres
async def test_webhook_answers_500_while_postgres_is_down_then_stores_once(
    fake: FakeTelegram, backend: FakeBackend, postgres_url: str, unused_tcp_port: int
) -> None:
    from sqlalchemy import make_url
    from sqlalchemy import text as sql

    from tests.faults import TcpProxy

    target = make_url(postgres_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    port = await proxy.start()
    db = Database(target.set(host="127.0.0.1", port=port).render_as_string(hide_password=False))
    for statement in ("DROP SCHEMA public CASCADE", "CREATE SCHEMA public"):
        await db.run(lambda conn, s=statement: conn.execute(sql(s)))
    await db.upgrade()
    manager = make_manager(Repository(db), backend)
    url = f"http://127.0.0.1:{unused_tcp_port}/telegram/webhook"
    adapter = make_adapter(fake, webhook_url=url, webhook_secret=SECRET)
    app = web.Application()
    app.router.add_route("POST", "/telegram/webhook", adapter.handle_webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    await adapter.start(manager)
    try:
        await proxy.shut()  # the database goes away
        update = fake.message_update(42, "is anyone there?")
        assert (await fake.deliver_webhook(update, secret=SECRET))[0] == 500
        assert (await fake.deliver_webhook(update, secret=SECRET))[0] == 500
        # The database is back on the same address; Telegram resends.
        proxy.server = await asyncio.start_server(proxy._serve, "127.0.0.1", port)
        assert (await fake.deliver_webhook(update, secret=SECRET))[0] == 200
        await fake.wait_for(lambda: fake.texts(42) == ["echo: is anyone there?"], what="reply")
        assert (await fake.deliver_webhook(update, secret=SECRET))[0] == 200  # a late resend
        await asyncio.sleep(0.5)
        assert fake.texts(42) == ["echo: is anyone there?"]
        assert await stored_events(manager) == 1
    finally:
        await adapter.stop()
        await runner.cleanup()
        await db.dispose()
        if proxy.server is not None:
            proxy.server.close()
