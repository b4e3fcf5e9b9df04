"""Buttons on Telegram: inline keyboards under replies and notices, and presses
coming back as commands through the inbox. Real PTB against the fake Bot API,
the real manager on SQLite."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest

from adapters.telegram import TelegramAdapter
from adapters.telegram.convert import BotIdentity, Pressed, classify_update, keyboard
from bot.manager import ConversationManager
from bot.team.service import RATING_BUTTONS, Team, TeamSettings
from bot.types import ConversationRef
from llm.fake import FakeBackend
from storage.repository import Repository
from storage.team_repo import TeamRepository
from tests.conftest import make_manager
from tests.fakes.telegram_api import FakeTelegram, SentMessage
from tests.support import free_port

ME = BotIdentity(123456, "deskmate_bot")
SECRET = "buttons-Secret_1"
THANKS = "Thanks for the feedback!"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def rating_manager(sqlite_repository: Repository, backend: FakeBackend) -> ConversationManager:
    """Every answer invites a rating, with 👍 and 👎 buttons."""
    team = Team(
        TeamRepository(sqlite_repository.db),
        owners={"test:admin"},
        settings=TeamSettings(ask_rating="all"),
    )
    # The model's time limit is not under test here: a stream of a thousand
    # pieces may take many seconds on a busy machine.
    return make_manager(sqlite_repository, backend, team=team, llm_timeout=120.0)


def make_adapter(fake: FakeTelegram, **overrides: object) -> TelegramAdapter:
    options: dict[str, object] = {
        "token": fake.token,
        "api_url": fake.api_url,
        "edit_interval": 0.05,
        "typing_interval": 0.5,
        "poll_timeout": 1,
        "per_chat_interval": 0.0,
        "group_interval": 0.0,
        "stop_timeout": 5,
        "request_timeout": 2,
        "retry_delay": 0.05,
    }
    options.update(overrides)
    return TelegramAdapter(**options)  # type: ignore[arg-type]


@pytest.fixture
async def polling(
    fake: FakeTelegram, rating_manager: ConversationManager
) -> AsyncIterator[TelegramAdapter]:
    adapter = make_adapter(fake)
    await adapter.start(rating_manager)
    yield adapter
    await adapter.stop()


def keyed(fake: FakeTelegram, chat: int) -> list[SentMessage]:
    return [m for m in fake.messages[chat] if m.reply_markup]


# -- converting ------------------------------------------------------------------------


def test_short_labels_pair_up_and_long_commands_are_left_out() -> None:
    rows, refused = keyboard(RATING_BUTTONS)
    assert rows == [[("👍", "/rate good"), ("👎", "/rate bad")]] and refused == []
    options = [
        ("How do I reset my password?", "/faq answer 12"),
        ("None of these — ask a person", "/human"),
        ("Too long", "/faq answer " + "x" * 60),
    ]
    rows, refused = keyboard(options)
    assert rows == [[options[0]], [options[1]]]
    assert refused == [options[2]]
    # 64 bytes, not characters: "é" is two.
    assert keyboard([("é", "/" + "é" * 32)])[1] and not keyboard([("e", "/" + "e" * 63)])[1]
    rows, refused = keyboard([(str(i), f"/n {i}") for i in range(101)])
    assert sum(len(r) for r in rows) == 100 and refused == [("100", "/n 100")]


def test_a_press_is_the_command_from_the_presser_in_the_topic(fake: FakeTelegram) -> None:
    sent = SentMessage(
        chat_id=-100777,
        message_id=9,
        text="Did you mean…",
        parse_mode=None,
        thread_id=31,
        reply_to=None,
        sent_at=0.0,
        reply_markup={"inline_keyboard": [[{"text": "Ask a person", "callback_data": "/human"}]]},
    )
    fake.make_forum(-100777)
    update = fake.press(sent, "Ask a person", user_id=77, first_name="Bea")
    result = classify_update(update, me=ME)
    assert isinstance(result, Pressed)
    inbound = result.inbound
    assert inbound.ref == ConversationRef("telegram", "123456", "-100777", "31")
    assert (inbound.user, inbound.user_name, inbound.text) == ("77", "Bea", "/human")
    assert inbound.event_id == f"press:{update['callback_query']['id']}"
    assert "message_id" not in inbound.meta and result.message == 9
    # A second press of the same button is a new event.
    again = classify_update(fake.press(sent, "Ask a person", user_id=77), me=ME)
    assert isinstance(again, Pressed) and again.inbound.event_id != inbound.event_id


# -- the fake keeps Telegram's rules -----------------------------------------------------


async def test_the_fake_refuses_what_telegram_refuses(
    fake: FakeTelegram, polling: TelegramAdapter
) -> None:
    bot = polling.bot
    long = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="/" + "a" * 64)]])
    with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
        await bot.send_message(chat_id=5, text="hi", reply_markup=long)
    many = InlineKeyboardMarkup(
        [[InlineKeyboardButton(str(i), callback_data=str(i))] for i in range(101)]
    )
    with pytest.raises(BadRequest, match="too long"):
        await bot.send_message(chat_id=5, text="hi", reply_markup=many)
    one = InlineKeyboardMarkup([[InlineKeyboardButton("Go", callback_data="/go")]])
    message = await bot.send_message(chat_id=5, text="hi", reply_markup=one)
    [sent] = fake.messages[5]
    assert sent.buttons() == [("Go", "/go")]
    await bot.edit_message_text(chat_id=5, message_id=message.message_id, text="changed")
    assert sent.reply_markup is None, "an edit without reply_markup takes the keyboard away"
    await bot.edit_message_reply_markup(chat_id=5, message_id=message.message_id, reply_markup=one)
    query = fake.press(sent, "Go")["callback_query"]["id"]
    assert await bot.answer_callback_query(query)
    with pytest.raises(BadRequest, match="Query is too old"):
        await bot.answer_callback_query(query)
    late = fake.press(sent, "Go")["callback_query"]["id"]
    fake.age_queries(15 * 60 + 1)
    with pytest.raises(BadRequest, match="Query is too old"):
        await bot.answer_callback_query(late)


# -- replies and notices -----------------------------------------------------------------


async def test_a_reply_shows_its_keyboard_and_a_press_rates_it_once(
    fake: FakeTelegram, polling: TelegramAdapter, rating_manager: ConversationManager
) -> None:
    fake.send_user_message(42, "hello")
    await fake.wait_for(lambda: bool(keyed(fake, 42)), what="the answer's keyboard")
    [answer] = fake.messages[42]
    assert answer.text.startswith("echo: hello") and "How did I do?" in answer.text
    assert answer.buttons() == [("👍", "/rate good"), ("👎", "/rate bad")]
    # One row: two short labels side by side.
    assert len(answer.reply_markup["inline_keyboard"]) == 1  # type: ignore[index]

    press = fake.push(fake.press(answer, "👍"))
    await fake.wait_for(lambda: THANKS in fake.texts(42), what="the rating's answer")
    query = press["callback_query"]["id"]
    await fake.wait_for(lambda: fake.queries[query]["answered"] == 1, what="the spinner stopped")
    # Chosen: in a private chat the keyboard goes away.
    await fake.wait_for(lambda: answer.reply_markup is None, what="the keyboard taken away")
    assert rating_manager.team is not None
    [rating] = await rating_manager.team.repository.ratings()
    assert rating.score == 1 and rating.user_id == "telegram:42"

    # Telegram sends the update again (our confirmation was lost): answered once.
    fake.repush(press)
    await fake.wait_for(lambda: fake.confirmed_offset > press["update_id"] and not fake.queued)
    await asyncio.sleep(0.3)
    assert fake.texts(42).count(THANKS) == 1
    assert fake.queries[query]["answered"] == 1  # the second answer was refused, harmlessly


async def test_a_streamed_reply_keeps_the_keyboard_on_its_last_message(
    fake: FakeTelegram, polling: TelegramAdapter, backend: FakeBackend
) -> None:
    # Over 4096 characters, streamed in many pieces: two messages.
    backend.enqueue(("word " * 1000).strip(), chunk_delay=0.001)
    fake.send_user_message(43, "tell me everything")
    await fake.wait_for(
        lambda: "How did I do?" in "".join(fake.texts(43)), what="the answer", within=120
    )
    await fake.wait_for(lambda: bool(keyed(fake, 43)), what="the keyboard", within=60)
    # Every write of the reply has ended, a late move of the keyboard included.
    async with asyncio.timeout(60):
        await polling.answers.wait_idle()
    first, last = fake.messages[43]
    assert first.reply_markup is None
    assert last.buttons() == [("👍", "/rate good"), ("👎", "/rate bad")]


async def test_a_notice_carries_its_buttons_on_its_last_part(
    fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = make_adapter(fake)
    await adapter.bot.initialize()
    try:
        ref = ConversationRef("telegram", "123456", "44")
        await adapter.post(ref, ("word " * 1000).strip(), buttons=RATING_BUTTONS)
        first, last = fake.messages[44]
        assert first.reply_markup is None and last.buttons() == list(RATING_BUTTONS)
        # A command Telegram cannot carry is left out, and the operator told.
        with caplog.at_level(logging.WARNING):
            await adapter.post(
                ref, "Pick one", buttons=[("Yes", "/ok"), ("Long", "/faq answer " + "9" * 60)]
            )
        assert fake.messages[44][-1].buttons() == [("Yes", "/ok")]
        assert "1-64 bytes" in caplog.text and "/faq answer 999" in caplog.text
    finally:
        await adapter.bot.shutdown()


async def test_a_press_over_the_webhook_is_stored_before_the_200(
    fake: FakeTelegram, rating_manager: ConversationManager
) -> None:
    port = free_port()
    adapter = make_adapter(
        fake, webhook_url=f"http://127.0.0.1:{port}/telegram/webhook", webhook_secret=SECRET
    )
    app = web.Application()
    app.router.add_post("/telegram/webhook", adapter.handle_webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await adapter.start(rating_manager)
    try:
        asked = fake.message_update(-100500, "@deskmate_bot hi", chat_type="group", user_id=8)
        assert (await fake.deliver_webhook(asked, secret=SECRET))[0] == 200
        await fake.wait_for(lambda: bool(keyed(fake, -100500)), what="the keyboard")
        [answer] = keyed(fake, -100500)
        # Someone else in the group presses: refused politely, keyboard kept.
        other = fake.press(answer, "👎", user_id=9)
        assert (await fake.deliver_webhook(other, secret=SECRET))[0] == 200
        await fake.wait_for(lambda: "Only the person" in fake.texts(-100500)[-1])
        press = fake.press(answer, "👎", user_id=8)
        for _ in range(2):  # Telegram retries a webhook call it saw no answer to
            assert (await fake.deliver_webhook(press, secret=SECRET))[0] == 200
        await fake.wait_for(lambda: "Thanks for telling us" in fake.texts(-100500)[-1])
        await asyncio.sleep(0.3)
        assert sum("Thanks for telling us" in t for t in fake.texts(-100500)) == 1
        assert answer.reply_markup is not None
        assert fake.queries[press["callback_query"]["id"]]["answered"] == 1
        assert rating_manager.team is not None
        [rating] = await rating_manager.team.repository.ratings()
        assert rating.score == -1 and rating.user_id == "telegram:8"
    finally:
        await adapter.stop()
        await runner.cleanup()


async def test_presses_are_asked_for(fake: FakeTelegram, polling: TelegramAdapter) -> None:
    await fake.wait_for(lambda: bool(fake.calls_to("getUpdates")), what="polling")
    assert "callback_query" in fake.calls_to("getUpdates")[0].params["allowed_updates"]
