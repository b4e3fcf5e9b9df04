"""/reset and /forget against a message that arrives right behind them, and
/reset in a group: the real Telegram and Slack adapters against the local fake
platforms, the real manager on SQLite, the scripted model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import func, select

from adapters.slack.adapter import SlackAdapter
from adapters.slack.convert import unescape
from adapters.telegram import TelegramAdapter
from bot.manager import ConversationManager
from bot.messages import say
from llm.fake import FakeBackend
from storage.models import inbound_events, messages
from storage.repository import Repository
from tests.conftest import make_manager
from tests.e2e.test_telegram_adapter import make_adapter
from tests.fakes.slack_api import FakeSlack, Workspace, message_event, sign, slash_command
from tests.fakes.telegram_api import FakeTelegram
from tests.support import serve_local

LONG = " ".join(f"w{i}" for i in range(150))
STOPPED = say("conversation.stopped")
FIRST = "remember the colour teal, then tell me a long story"
NEXT = "what is the capital of Peru?"


async def user_texts(manager: ConversationManager) -> list[str]:
    """The people's messages stored, oldest first."""
    query = select(messages.c.text).where(messages.c.role == "user").order_by(messages.c.id)
    return await manager.repository.db.run(lambda conn: list(conn.execute(query).scalars()))


async def event_of(manager: ConversationManager, text: str) -> tuple[str, str]:
    """The status and user of the one inbound event that said ``text``."""
    query = select(inbound_events.c.status, inbound_events.c.user_id).where(
        inbound_events.c.text == text
    )
    row = await manager.repository.db.run(lambda conn: conn.execute(query).one())
    return str(row.status), str(row.user_id)


async def until_stored(manager: ConversationManager, count: int) -> None:
    query = select(func.count()).select_from(inbound_events)
    for _ in range(500):
        if await manager.repository.db.run(lambda conn: conn.execute(query).scalar()) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} inbound events were stored")


def last_prompt(backend: FakeBackend) -> list[str]:
    return [m.content for m in backend.requests[-1].messages]


# -- Telegram: the command and the next question in one getUpdates batch ---------


@pytest.fixture
async def polling(
    fake: FakeTelegram, manager: ConversationManager
) -> AsyncIterator[TelegramAdapter]:
    adapter = make_adapter(fake)
    await adapter.start(manager)
    yield adapter
    await adapter.stop()


async def _batch_behind_a_stream(
    fake: FakeTelegram, manager: ConversationManager, backend: FakeBackend, command: str
) -> list[str]:
    """A long answer streams in chat 42; ``command`` and the next question come
    in one getUpdates batch while it is on its way. Returns the chat's replies."""
    backend.enqueue(LONG, chunk_delay=0.02)
    fake.send_user_message(42, FIRST)
    await fake.wait_for(lambda: bool(fake.texts(42)), what="the answer to start")
    # The answer's next edit waits until both are stored, so that neither can
    # be handled before the other arrived.
    fake.hold("editMessageText", 42)
    # Queued together, without a pause: any getUpdates that returns one
    # returns both.
    fake.push(fake.message_update(42, command))
    fake.push(fake.message_update(42, NEXT))
    try:
        await until_stored(manager, 3)
    finally:
        fake.release("editMessageText", 42)
    await fake.wait_for(
        lambda: len(fake.texts(42)) == 3 and fake.texts(42)[-1] == f"echo: {NEXT}",
        what="the answer to the question after the command",
    )
    return fake.texts(42)


async def test_reset_in_a_batch_keeps_the_question_behind_it(
    fake: FakeTelegram,
    polling: TelegramAdapter,
    manager: ConversationManager,
    backend: FakeBackend,
) -> None:
    replies = await _batch_behind_a_stream(fake, manager, backend, "/reset")
    assert replies[0].endswith(STOPPED)
    assert replies[1].startswith("Done — I've forgotten this conversation")
    # The model saw the question asked after /reset, and nothing from before it.
    prompt = last_prompt(backend)
    assert NEXT in prompt
    assert not any("teal" in m for m in prompt)
    assert await user_texts(manager) == [NEXT]
    assert (await event_of(manager, NEXT))[0] == "answered"


async def test_forget_in_a_batch_keeps_the_question_behind_it(
    fake: FakeTelegram,
    polling: TelegramAdapter,
    manager: ConversationManager,
    backend: FakeBackend,
) -> None:
    replies = await _batch_behind_a_stream(fake, manager, backend, "/forget")
    assert replies[1].startswith("Done — I deleted 3 stored messages")
    assert NEXT in last_prompt(backend)
    assert await user_texts(manager) == [NEXT]
    # The later question keeps its text and its author, and was answered.
    assert await event_of(manager, NEXT) == ("answered", "telegram:42")


# -- Slack: /deskmate reset in a DM, the next message right behind it -------------

SECRET = "test-signing-secret"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    server = await FakeSlack(
        workspaces=[Workspace("T1", "xoxb-test")], time_scale=0.05 / 1.2
    ).start()
    yield server
    await server.stop()


@pytest.fixture
async def slack_bot(
    slack: FakeSlack, manager: ConversationManager
) -> AsyncIterator[tuple[SlackAdapter, str]]:
    adapter = SlackAdapter(
        bot_token="xoxb-test", signing_secret=SECRET, api_url=slack.api_url, edit_interval=0.05
    )
    app = web.Application()
    app.router.add_post("/slack/events", adapter.handle_http)
    runner, port = await serve_local(app)
    await adapter.start(manager)
    yield adapter, f"http://127.0.0.1:{port}/slack/events"
    await adapter.stop()
    await runner.cleanup()


async def _post(url: str, body: str, content_type: str) -> None:
    headers = {"Content-Type": content_type, **sign(SECRET, body)}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        assert response.status == 200


async def test_slack_reset_keeps_the_dm_behind_it(
    slack: FakeSlack,
    slack_bot: tuple[SlackAdapter, str],
    manager: ConversationManager,
    backend: FakeBackend,
) -> None:
    _, url = slack_bot
    backend.enqueue(LONG, chunk_delay=0.02)
    await _post(url, json.dumps(message_event(FIRST, channel="D1")), "application/json")
    await slack.wait_for(lambda: bool(slack.bot_messages("D1")))
    slack.hold("chat.update", "D1")
    try:
        command = slash_command("reset", response_url=slack.response_url(), channel="D1")
        await _post(url, command, "application/x-www-form-urlencoded")
        await _post(url, json.dumps(message_event(NEXT, channel="D1")), "application/json")
        await until_stored(manager, 3)
    finally:
        slack.release("chat.update", "D1")
    await slack.wait_for(
        lambda: [unescape(m.text) for m in slack.bot_messages("D1")][-1:] == [f"echo: {NEXT}"]
    )
    assert unescape(slack.bot_messages("D1")[0].text).endswith(STOPPED)
    assert "forgotten this conversation" in slack.webhook_posts[0]["text"]
    prompt = last_prompt(backend)
    assert NEXT in prompt
    assert not any("teal" in m for m in prompt)
    assert await user_texts(manager) == [NEXT]


# -- /reset in a Telegram group ----------------------------------------------------

GROUP = -5001
ANN, BOB, BOSS = 11, 12, 13


@pytest.fixture
async def group_polling(
    fake: FakeTelegram, sqlite_repository: Repository, backend: FakeBackend
) -> AsyncIterator[ConversationManager]:
    # BOSS is an owner (DESKMATE_ADMINS): an admin of every tenant.
    manager = make_manager(sqlite_repository, backend, admins={f"telegram:{BOSS}"})
    adapter = make_adapter(fake)
    await adapter.start(manager)
    yield manager
    await adapter.stop()


def _in_group(fake: FakeTelegram, user: int, text: str) -> None:
    fake.send_user_message(GROUP, text, user_id=user, first_name=f"user{user}")


async def test_a_members_reset_leaves_the_others_alone(
    fake: FakeTelegram, group_polling: ConversationManager, backend: FakeBackend
) -> None:
    manager = group_polling
    _in_group(fake, BOB, "@deskmate_bot my order number is 4711")
    await fake.wait_for(lambda: fake.texts(GROUP) == ["echo: my order number is 4711"])
    backend.enqueue(LONG, chunk_delay=0.01)
    _in_group(fake, ANN, "@deskmate_bot tell me a long story")
    await fake.wait_for(lambda: len(fake.texts(GROUP)) == 2, what="Ann's answer to start")
    _in_group(fake, BOB, "/reset")
    await fake.wait_for(lambda: len(fake.texts(GROUP)) == 3, what="Bob's reset")
    replies = fake.texts(GROUP)
    # Ann's answer ran to its end; Bob forgot only his own part.
    assert replies[1] == LONG
    assert replies[2].startswith("Done — I've forgotten your part of this group's conversation")
    assert "(3 messages" in replies[2]
    assert await user_texts(manager) == ["tell me a long story"]

    _in_group(fake, ANN, "@deskmate_bot and the ending?")
    await fake.wait_for(lambda: len(fake.texts(GROUP)) == 4)
    assert "tell me a long story" in last_prompt(backend)
    assert not any("4711" in m for m in last_prompt(backend))


async def test_an_admins_reset_wipes_the_group_and_stops_its_answer(
    fake: FakeTelegram, group_polling: ConversationManager, backend: FakeBackend
) -> None:
    manager = group_polling
    backend.enqueue(LONG, chunk_delay=0.02)
    _in_group(fake, ANN, "@deskmate_bot tell me a long story")
    await fake.wait_for(lambda: bool(fake.texts(GROUP)), what="Ann's answer to start")
    _in_group(fake, BOSS, "/reset")
    await fake.wait_for(lambda: len(fake.texts(GROUP)) == 2, what="the reset")
    replies = fake.texts(GROUP)
    assert replies[0].endswith(STOPPED)
    assert replies[1].startswith("Done — I've forgotten this conversation")
    assert await user_texts(manager) == []


async def test_a_members_reset_stops_their_own_answer(
    fake: FakeTelegram, group_polling: ConversationManager, backend: FakeBackend
) -> None:
    backend.enqueue(LONG, chunk_delay=0.02)
    _in_group(fake, ANN, "@deskmate_bot tell me a long story")
    await fake.wait_for(lambda: bool(fake.texts(GROUP)), what="Ann's answer to start")
    _in_group(fake, ANN, "/reset")
    await fake.wait_for(lambda: len(fake.texts(GROUP)) == 2, what="the reset")
    assert fake.texts(GROUP)[0].endswith(STOPPED)
    assert await user_texts(group_polling) == []
