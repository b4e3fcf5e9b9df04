"""Buttons on Slack: an actions block under a reply's final message and under
outbox notices; a click comes back as its command through the inbox. Real
Bolt and slack-sdk over HTTP against the fake Slack, the real manager on SQLite."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from adapters.slack.adapter import SlackAdapter
from adapters.slack.convert import action_to_inbound, command_block, unescape
from bot.manager import ConversationManager
from bot.team.service import RATING_BUTTONS, Team, TeamSettings
from bot.types import ConversationRef
from llm.fake import FakeBackend
from storage.repository import Repository
from storage.team_repo import TeamRepository
from tests.conftest import make_manager
from tests.fakes.slack_api import FakeSlack, Message, block_actions_payload, deliver, mention_event
from tests.fakes.slack_api import message_event as dm
from tests.support import serve_local

SECRET = "buttons-signing-secret"


@dataclass
class Bot:
    fake: FakeSlack
    adapter: SlackAdapter
    manager: ConversationManager
    url: str
    session: aiohttp.ClientSession

    async def deliver(self, payload: dict[str, object]) -> int:
        return await deliver(self.session, self.url, SECRET, payload)

    def labels(self, message: Message) -> list[tuple[str, str]]:
        return [(b["text"]["text"], b["value"]) for b in self.fake.buttons(message)]


@pytest.fixture
async def bot(sqlite_repository: Repository, backend: FakeBackend) -> AsyncIterator[Bot]:
    fake = await FakeSlack(time_scale=0.05 / 1.2).start()
    team = Team(
        TeamRepository(sqlite_repository.db),
        owners={"test:admin"},
        settings=TeamSettings(ask_rating="all"),
    )
    # The model's time limit is not under test here: a stream of thousands of
    # pieces may take many seconds on a busy machine.
    manager = make_manager(sqlite_repository, backend, team=team, llm_timeout=120.0)
    adapter = SlackAdapter(
        bot_token="xoxb-test", signing_secret=SECRET, api_url=fake.api_url, edit_interval=0.05
    )
    app = web.Application()
    app.router.add_post("/slack/events", adapter.handle_http)
    runner, port = await serve_local(app)
    await adapter.start(manager)
    async with aiohttp.ClientSession() as session:
        yield Bot(fake, adapter, manager, f"http://127.0.0.1:{port}/slack/events", session)
    await adapter.stop()
    await runner.cleanup()
    await fake.stop()


# -- converting ------------------------------------------------------------------------


def test_buttons_become_an_actions_block_within_slacks_limits() -> None:
    block, refused = command_block(RATING_BUTTONS, "1700000000.000100")
    assert block is not None and refused == []
    assert block["block_id"] == "commands:1700000000.000100"
    assert [(e["action_id"], e["text"]["text"], e["value"]) for e in block["elements"]] == [
        ("deskmate_command:0", "👍", "/rate good"),
        ("deskmate_command:1", "👎", "/rate bad"),
    ]
    many = [(f"Option {i}", f"/faq answer {i}") for i in range(26)] + [("Huge", "/x " + "y" * 2000)]
    block, refused = command_block([("L" * 80, "/human"), *many], "")
    assert block is not None and len(block["elements"]) == 25
    assert len(block["elements"][0]["text"]["text"]) == 75  # a long label is shortened
    assert [label for label, _ in refused] == ["Option 24", "Option 25", "Huge"]
    assert command_block([], "") == (None, [])


def test_a_click_is_the_command_in_the_conversation_the_block_names() -> None:
    block, _ = command_block([("None of these — ask a person", "/human")], "")
    assert block is not None
    # A DM's answer lives outside any thread: the conversation's thread is "".
    message = {"type": "message", "ts": "1700000000.000200", "text": "t", "blocks": [block]}
    payload = block_actions_payload(
        message=message,
        channel="D1",
        action={**block["elements"][0], "block_id": block["block_id"]},
        user="U2",
    )
    inbound = action_to_inbound(payload)
    assert inbound.ref == ConversationRef("slack", "T1", "D1", "")
    assert (inbound.text, inbound.user) == ("/human", "T1/U2")
    assert inbound.meta["space"] is False


# -- replies, notices, clicks ---------------------------------------------------------------


async def test_a_reply_carries_the_buttons_and_a_click_rates_it_once(bot: Bot) -> None:
    assert await bot.deliver(dm("hello")) == 200
    await bot.fake.wait_for(lambda: any(bot.fake.buttons(m) for m in bot.fake.bot_messages("D1")))
    [answer] = bot.fake.bot_messages("D1")
    assert unescape(answer.text).startswith("echo: hello") and "How did I do?" in answer.text
    assert bot.labels(answer) == [("👍", "/rate good"), ("👎", "/rate bad")]

    click = bot.fake.click(answer, "👎", user="U2")
    assert await bot.deliver(click) == 200
    assert await bot.deliver(click) == 200  # the same click delivered again
    await bot.fake.wait_for(lambda: len(bot.fake.bot_messages("D1")) == 2)
    async with asyncio.timeout(10):
        await bot.adapter.wait_idle()
    await asyncio.sleep(0.2)
    texts = [unescape(m.text) for m in bot.fake.bot_messages("D1")]
    assert len(texts) == 2 and texts[1].startswith("Thanks for telling us")
    assert bot.manager.team is not None
    [rating] = await bot.manager.team.repository.ratings()
    assert rating.score == -1 and rating.user_id == "slack:T1/U2"


async def test_a_click_in_a_channel_thread_answers_in_that_thread(bot: Bot) -> None:
    asked = mention_event("hi there", channel="C1", user="U3")
    thread = asked["event"]["ts"]
    assert await bot.deliver(asked) == 200
    await bot.fake.wait_for(
        lambda: any(bot.fake.buttons(m) for m in bot.fake.bot_messages("C1", thread))
    )
    [answer] = bot.fake.bot_messages("C1", thread)
    assert await bot.deliver(bot.fake.click(answer, "👍", user="U3")) == 200
    await bot.fake.wait_for(lambda: len(bot.fake.bot_messages("C1", thread)) == 2)
    assert unescape(bot.fake.bot_messages("C1", thread)[1].text) == "Thanks for the feedback!"


async def test_a_streamed_reply_keeps_the_buttons_on_its_last_message(
    bot: Bot, backend: FakeBackend
) -> None:
    # Over 12,000 characters: two messages.
    backend.enqueue(("word " * 2600).strip(), chunk_delay=0.0005)
    assert await bot.deliver(dm("tell me everything", user="U4", channel="D4")) == 200
    await bot.fake.wait_for(
        lambda: any("How did I do?" in m.text for m in bot.fake.bot_messages("D4")), within=120
    )
    async with asyncio.timeout(60):
        await bot.adapter.wait_idle()
    first, last = bot.fake.bot_messages("D4")
    assert bot.fake.buttons(first) == []
    assert bot.labels(last) == list(RATING_BUTTONS)


async def test_a_notice_carries_its_buttons_under_its_last_part(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    ref = ConversationRef("slack", "T1", "D5")
    await bot.adapter.post(ref, "Resolved. " + "x " * 7000, buttons=RATING_BUTTONS)
    first, last = bot.fake.bot_messages("D5")
    assert bot.fake.buttons(first) == [] and bot.labels(last) == list(RATING_BUTTONS)
    with caplog.at_level(logging.WARNING):
        await bot.adapter.post(ref, "Pick", buttons=[("Yes", "/ok"), ("", "/nothing")])
    assert bot.labels(bot.fake.bot_messages("D5")[-1]) == [("Yes", "/ok")]
    assert "left out" in caplog.text
