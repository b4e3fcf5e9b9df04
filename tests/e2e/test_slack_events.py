"""The Slack adapter end to end, in one process: real Bolt (HTTP Events API and
Socket Mode) and real slack-sdk clients against the local fake Slack, the real
manager and repository on SQLite, the scripted fake LLM."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.slack.adapter import SlackAdapter
from adapters.slack.convert import unescape
from bot.errors import StorageError
from bot.manager import ConversationManager
from llm.fake import FakeBackend
from storage.repository import Repository
from tests.conftest import make_manager
from tests.fakes.slack_api import (
    FakeSlack,
    Workspace,
    mention_event,
    message_event,
    sign,
    slash_command,
)
from tests.support import serve_local

SECRET = "test-signing-secret"


@dataclass
class Bot:
    fake: FakeSlack
    adapter: SlackAdapter
    manager: ConversationManager
    backend: FakeBackend
    url: str
    session: aiohttp.ClientSession

    async def deliver(
        self, payload: dict[str, Any], *, retry: int = 0, headers: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        body = json.dumps(payload)
        sent = {"Content-Type": "application/json", **sign(SECRET, body)}
        if retry:
            sent["X-Slack-Retry-Num"] = str(retry)
            sent["X-Slack-Retry-Reason"] = "http_timeout"
        sent.update(headers or {})
        async with self.session.post(self.url, data=body, headers=sent) as response:
            await response.read()
            return response

    async def answer(self, thread_ts: str, channel: str = "C1", count: int = 1) -> list[str]:
        """Wait until ``count`` bot messages in the thread hold final text; return them."""

        await self.fake.wait_for(
            lambda: len(self.fake.bot_messages(channel, thread_ts)) >= count, within=60
        )
        async with asyncio.timeout(60):
            await self.adapter.wait_idle()
        return [unescape(m.text) for m in self.fake.bot_messages(channel, thread_ts)]


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    # Slack's rate limits, scaled to the adapter's edit interval (1.2 s by default).
    server = await FakeSlack(
        workspaces=[Workspace("T1", "xoxb-test"), Workspace("T2", "xoxb-other")],
        time_scale=0.05 / 1.2,
    ).start()
    yield server
    await server.stop()


async def _serve(adapter: SlackAdapter) -> tuple[web.AppRunner, str]:
    # The route table the bot's one HTTP server would hold for this adapter.
    app = web.Application()
    app.router.add_post("/slack/events", adapter.handle_http)
    runner, port = await serve_local(app)
    return runner, f"http://127.0.0.1:{port}/slack/events"


@pytest.fixture
def manager(sqlite_repository: Repository, backend: FakeBackend) -> ConversationManager:
    # The model's time limit is not under test here: a stream of thousands of
    # pieces may take many seconds on a busy machine.
    return make_manager(sqlite_repository, backend, llm_timeout=120.0)


@pytest.fixture
async def bot(
    fake: FakeSlack, manager: ConversationManager, backend: FakeBackend
) -> AsyncIterator[Bot]:
    adapter = SlackAdapter(
        bot_token="xoxb-test", signing_secret=SECRET, api_url=fake.api_url, edit_interval=0.05
    )
    runner, url = await _serve(adapter)
    await adapter.start(manager)
    async with aiohttp.ClientSession() as session:
        yield Bot(fake, adapter, manager, backend, url, session)
    await adapter.stop()
    await runner.cleanup()


async def test_mention_is_answered_in_its_thread_and_the_thread_continues(bot: Bot) -> None:
    first = mention_event("where is my order?")
    response = await bot.deliver(first)
    assert response.status == 200
    thread = first["event"]["ts"]
    assert await bot.answer(thread) == ["echo: where is my order?"]
    assert ("C1", thread, "eyes") in bot.fake.reactions
    assert bot.fake.bot_messages("C1", thread)[0].edits[0] == "_thinking…_"

    # The same person goes on in the thread without mentioning the bot.
    follow = message_event(
        "and the invoice?", channel="C1", channel_type="channel", thread_ts=thread
    )
    assert (await bot.deliver(follow)).status == 200
    answers = await bot.answer(thread, count=2)
    assert answers == ["echo: where is my order?", "echo: and the invoice?"]
    history = [m.content for m in bot.backend.requests[-1].messages]
    assert "where is my order?" in history

    # Someone else chatting in the thread is not talking to the bot.
    other = message_event(
        "thanks all", channel="C1", channel_type="channel", thread_ts=thread, user="U9"
    )
    assert (await bot.deliver(other)).status == 200
    # A top-level channel message without a mention is not for the bot either.
    await bot.deliver(message_event("lunch?", channel="C1", channel_type="channel"))
    await asyncio.sleep(0.3)
    assert len(bot.fake.bot_messages()) == 2


async def test_thread_membership_is_rebuilt_from_history_after_a_restart(
    bot: Bot, manager: ConversationManager
) -> None:
    thread = bot.fake.add_user_message("C1", "U2", "<@UBOT> help please")
    await bot.adapter.outbound.paced_post("T1", "C1", thread, "Sure, what do you need?")
    follow = message_event("my login fails", channel="C1", channel_type="channel", thread_ts=thread)
    assert (await bot.deliver(follow)).status == 200
    answers = await bot.answer(thread, count=2)
    assert answers[-1] == "echo: my login fails"
    assert bot.fake.calls_of("conversations.replies")


async def test_direct_messages_are_answered_top_level(bot: Bot) -> None:
    await bot.deliver(message_event("hi there"))
    await bot.fake.wait_for(
        lambda: any(m.text == "echo: hi there" for m in bot.fake.bot_messages("D1"))
    )
    [reply] = bot.fake.bot_messages("D1")
    assert reply.thread_ts == ""


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Slack-Signature": "v0=" + "0" * 64},
        {"X-Slack-Request-Timestamp": str(int(time.time()) - 600)},
        {"X-Slack-Request-Timestamp": "yesterday"},
        {"X-Slack-Request-Timestamp": ""},
        {"X-Slack-Signature": ""},
    ],
    ids=["bad-signature", "stale", "non-numeric", "no-timestamp", "no-signature"],
)
async def test_unsigned_or_badly_signed_requests_get_401(bot: Bot, headers: dict[str, str]) -> None:
    response = await bot.deliver(mention_event("forged"), headers=headers)
    assert response.status == 401
    await asyncio.sleep(0.2)
    assert bot.fake.bot_messages() == []
    assert bot.backend.requests == []


async def test_stale_timestamp_with_a_matching_signature_is_refused(bot: Bot) -> None:
    body = json.dumps(mention_event("replayed"))
    headers = {"Content-Type": "application/json", **sign(SECRET, body, "1500000000")}
    async with bot.session.post(bot.url, data=body, headers=headers) as response:
        assert response.status == 401


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"type": "event_callback", "text": "\xff\xfe"}', "application/json"),
        (b'{"type": "event_callback"}', "application/json; charset=foo"),
        (b"token=x&text=%FF", "application/x-www-form-urlencoded; charset=no-such-charset"),
    ],
    ids=["invalid-utf8", "unknown-charset", "unknown-form-charset"],
)
async def test_an_unreadable_unsigned_body_gets_401(
    bot: Bot, body: bytes, content_type: str
) -> None:
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": str(int(time.time())),
        "X-Slack-Signature": "v0=" + "0" * 64,
    }
    async with bot.session.post(bot.url, data=body, headers=headers) as response:
        assert response.status == 401


async def test_a_non_ascii_signature_gets_401(bot: Bot) -> None:
    body = json.dumps(mention_event("forged"))
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": str(int(time.time())),
        "X-Slack-Signature": "v0=\u00e9",
    }
    async with bot.session.post(bot.url, data=body.encode(), headers=headers) as response:
        assert response.status == 401


async def test_a_retried_event_is_answered_once(bot: Bot) -> None:
    bot.backend.enqueue("one answer", chunk_delay=0.05)
    event = mention_event("retry me")
    thread = event["event"]["ts"]
    assert (await bot.deliver(event)).status == 200
    # Slack retries while the first answer is still streaming, and again after.
    assert (await bot.deliver(event, retry=1)).status == 200
    assert await bot.answer(thread) == ["one answer"]
    assert (await bot.deliver(event, retry=2)).status == 200
    await asyncio.sleep(0.3)
    assert len(bot.fake.bot_messages("C1", thread)) == 1
    assert len(bot.backend.requests) == 1


async def test_a_retry_whose_first_delivery_was_lost_is_answered(bot: Bot) -> None:
    event = mention_event("first try got lost")
    assert (await bot.deliver(event, retry=1)).status == 200
    assert await bot.answer(event["event"]["ts"]) == ["echo: first try got lost"]


async def test_storage_failure_is_not_acknowledged(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise StorageError("database is locked")

    monkeypatch.setattr(bot.manager.repository, "accept", broken)
    event = mention_event("store me")
    response = await bot.deliver(event)
    assert response.status == 500
    monkeypatch.undo()
    # Slack's retry then goes through.
    assert (await bot.deliver(event, retry=1)).status == 200
    assert await bot.answer(event["event"]["ts"]) == ["echo: store me"]


async def test_a_45000_character_answer_arrives_whole(bot: Bot) -> None:
    words = [f"word{i:05d}" for i in range(4_600)]
    text = " ".join(words)[:44_999] + "!"
    assert len(text) == 45_000
    bot.backend.enqueue(text)
    event = mention_event("tell me everything")
    await bot.deliver(event)
    chunks = await bot.answer(event["event"]["ts"], count=4)
    assert len(chunks) == 4
    assert "".join(chunks) == text
    for message in bot.fake.bot_messages():
        # Shown as blocks, within Slack's per-block and per-message totals.
        assert message.blocks
        assert all(len(b["text"]["text"]) <= 3_000 for b in message.blocks)
        assert sum(len(b["text"]["text"]) for b in message.blocks) <= 13_000
    assert bot.fake.rate_limited == []


async def test_a_14000_character_answer_leaves_no_placeholder(bot: Bot) -> None:
    # Over about 13,000 characters of blocks Slack refuses the message
    # (msg_blocks_too_long); it used to leave the placeholder in the thread.
    text = ("Step by step: " * 1_000).strip()
    bot.backend.enqueue(text, chunk_delay=0.0005)
    event = mention_event("explain it all")
    await bot.deliver(event)
    chunks = await bot.answer(event["event"]["ts"], count=2)
    assert "".join(chunks) == text
    assert not any("thinking" in chunk for chunk in chunks)
    assert all(m.blocks for m in bot.fake.bot_messages())
    assert bot.fake.rate_limited == []


async def test_writes_into_one_channel_keep_to_slacks_rate(bot: Bot) -> None:
    # Three questions at once in one channel: their placeholders, edits and
    # final texts all keep to one write per interval in the channel.
    events = [mention_event(f"question {n}") for n in range(3)]
    for _ in events:
        bot.backend.enqueue(" ".join(f"w{n}" for n in range(30)), chunk_delay=0.005)
    for event in events:
        assert (await bot.deliver(event)).status == 200
    for event in events:
        assert len(await bot.answer(event["event"]["ts"])) == 1
    assert bot.fake.rate_limited == []


async def test_an_answer_that_cannot_be_shown_is_taken_back(bot: Bot) -> None:
    # Slack takes the placeholder, then refuses every edit: the placeholder
    # is deleted, and the answer comes whole when the event is delivered again.
    bot.fake.fail_next("chat.update", "internal_error", times=50)
    event = mention_event("are you there?")
    thread = event["event"]["ts"]
    assert (await bot.deliver(event)).status == 200
    await bot.fake.wait_for(lambda: bool(bot.fake.deleted))
    await bot.adapter.wait_idle()
    assert bot.fake.bot_messages("C1", thread) == []
    assert [m.text for m in bot.fake.deleted] == ["_thinking…_"]
    bot.fake._failures.clear()
    assert (await bot.deliver(event, retry=1)).status == 200
    assert await bot.answer(thread) == ["echo: are you there?"]


async def test_rate_limited_update_is_retried_after_retry_after(bot: Bot) -> None:
    bot.fake.rate_limit_next("chat.update", retry_after=1, times=1)
    event = mention_event("slow down")
    started = time.monotonic()
    await bot.deliver(event)
    assert await bot.answer(event["event"]["ts"]) == ["echo: slow down"]
    updates = bot.fake.calls_of("chat.update")
    assert len(updates) >= 2
    assert updates[-1].at - started >= 1.0


async def test_workspaces_with_the_same_channel_id_keep_separate_histories(bot: Bot) -> None:
    await bot.deliver(message_event("my secret is alpha", team="T1", channel="D1"))
    await bot.fake.wait_for(lambda: len(bot.fake.bot_messages("D1")) == 1)
    await bot.adapter.wait_idle()
    await bot.deliver(message_event("what is my secret?", team="T2", channel="D1"))
    await bot.fake.wait_for(lambda: len(bot.fake.bot_messages("D1")) == 2)
    await bot.adapter.wait_idle()
    seen_by_t2 = [m.content for m in bot.backend.requests[-1].messages]
    assert "what is my secret?" in seen_by_t2
    assert not any("alpha" in content for content in seen_by_t2)
    await bot.deliver(message_event("and again", team="T1", channel="D1"))
    await bot.fake.wait_for(lambda: len(bot.backend.requests) == 3)
    seen_by_t1 = [m.content for m in bot.backend.requests[-1].messages]
    assert "my secret is alpha" in seen_by_t1
    assert "what is my secret?" not in seen_by_t1


async def test_bot_messages_edits_and_deletes_are_ignored(bot: Bot) -> None:
    for payload in (
        message_event("I am a bot", bot_id="BBOT", user="UBOT"),
        message_event("another bot", bot_id="B7", subtype="bot_message"),
        message_event("edited", subtype="message_changed"),
        message_event("gone", subtype="message_deleted"),
    ):
        assert (await bot.deliver(payload)).status == 200
    await asyncio.sleep(0.3)
    assert bot.fake.bot_messages() == []
    assert bot.backend.requests == []


async def test_slash_command_runs_the_command_registry(bot: Bot) -> None:
    body = slash_command("help", response_url=bot.fake.response_url())
    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(SECRET, body)}
    started = time.monotonic()
    async with bot.session.post(bot.url, data=body, headers=headers) as response:
        assert response.status == 200
    assert time.monotonic() - started < 1.0
    await bot.fake.wait_for(lambda: bool(bot.fake.webhook_posts))
    [post] = bot.fake.webhook_posts
    assert post["response_type"] == "ephemeral"
    text = unescape(post["text"])
    assert text.startswith("Here is what I can do:")
    assert "/deskmate reset" in text
    assert bot.backend.requests == []


async def test_url_verification_is_answered(bot: Bot) -> None:
    payload = {"token": "x", "challenge": "abc123", "type": "url_verification"}
    body = json.dumps(payload)
    headers = {"Content-Type": "application/json", **sign(SECRET, body)}
    async with bot.session.post(bot.url, data=body, headers=headers) as response:
        assert response.status == 200
        assert (await response.json())["challenge"] == "abc123"


# -- Socket Mode ------------------------------------------------------------------------


@pytest.fixture
async def socket_bot(
    fake: FakeSlack, manager: ConversationManager, backend: FakeBackend
) -> AsyncIterator[SlackAdapter]:
    adapter = SlackAdapter(
        bot_token="xoxb-test", app_token=fake.app_token, api_url=fake.api_url, edit_interval=0.05
    )
    await adapter.start(manager)
    await fake.wait_connected()
    yield adapter
    await adapter.stop()


async def test_socket_mode_answers_once_across_a_reconnect(
    socket_bot: SlackAdapter, fake: FakeSlack, backend: FakeBackend
) -> None:
    first = mention_event("over the socket")
    thread = first["event"]["ts"]
    ack = await fake.wait_for_ack(await fake.send_envelope(first))
    assert set(ack) == {"envelope_id"}
    await fake.wait_for(
        lambda: [m.text for m in fake.bot_messages("C1", thread)] == ["echo: over the socket"]
    )

    await fake.send_disconnect()
    assert fake.socket_connections == 2
    assert len(fake.calls_of("apps.connections.open")) == 2

    # Slack redelivers the first event on the new connection (same event_id) ...
    await fake.wait_for_ack(await fake.send_envelope(first, retry_attempt=1))
    # ... and new events keep flowing.
    second = mention_event("after reconnect")
    await fake.wait_for_ack(await fake.send_envelope(second))
    await fake.wait_for(
        lambda: (
            [m.text for m in fake.bot_messages("C1", second["event"]["ts"])]
            == ["echo: after reconnect"]
        )
    )
    await asyncio.sleep(0.2)
    assert len(fake.bot_messages("C1", thread)) == 1
    assert len(backend.requests) == 2


async def test_socket_mode_does_not_ack_what_it_could_not_store(
    socket_bot: SlackAdapter,
    fake: FakeSlack,
    manager: ConversationManager,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise StorageError("disk full")

    monkeypatch.setattr(manager.repository, "accept", broken)
    envelope = await fake.send_envelope(mention_event("lost?"))
    with pytest.raises(TimeoutError):
        await fake.wait_for_ack(envelope, within=1.0)


async def test_events_stored_before_a_crash_are_answered_on_start(
    fake: FakeSlack, tmp_path: Any, backend: FakeBackend
) -> None:
    from adapters.slack.convert import event_to_inbound
    from storage.db import Database

    url = f"sqlite:///{tmp_path / 'crash.db'}"
    db = Database(url)
    await db.upgrade()
    before = Repository(db)
    event = mention_event("asked just before the crash")
    await make_manager(before, backend).accept(event_to_inbound(event, bot_user_id="UBOT"))
    await before.aclose()  # the process died here: stored, never answered

    after = Repository(Database(url))
    adapter = SlackAdapter(bot_token="xoxb-test", signing_secret=SECRET, api_url=fake.api_url)
    try:
        await adapter.start(make_manager(after, backend))
        await adapter.wait_idle()
        thread = event["event"]["ts"]
        assert [m.text for m in fake.bot_messages("C1", thread)] == [
            "echo: asked just before the crash"
        ]
    finally:
        await adapter.stop()
        await after.aclose()


async def test_send_posts_outside_a_reply_split_to_the_limits(bot: Bot) -> None:
    from bot.types import ConversationRef

    text = "relayed " * 6_000
    thread = bot.fake.add_user_message("C5", "U2", "the thread's first message")
    await bot.adapter.send(ConversationRef("slack", "T1", "C5", thread), text)
    posted = bot.fake.bot_messages("C5", thread)
    assert len(posted) == 4
    assert all(m.blocks for m in posted)
    assert bot.fake.rate_limited == []
    assert "".join(unescape(m.text) for m in posted) == text


async def test_bad_token_fails_start_with_a_clear_error(
    fake: FakeSlack, manager: ConversationManager
) -> None:
    from bot.errors import ConfigError

    adapter = SlackAdapter(bot_token="xoxb-wrong", signing_secret=SECRET, api_url=fake.api_url)
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN"):
        await adapter.start(manager)


async def test_socket_mode_with_a_bad_app_token_fails_start_clearly(
    fake: FakeSlack, manager: ConversationManager
) -> None:
    from bot.errors import ConfigError

    adapter = SlackAdapter(bot_token="xoxb-test", app_token="xapp-wrong", api_url=fake.api_url)
    try:
        with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
            await adapter.start(manager)
    finally:
        await adapter.stop()


@pytest.mark.parametrize("error", ["invalid_blocks", "msg_blocks_too_long"])
async def test_rejected_blocks_fall_back_to_plain_text(bot: Bot, error: str) -> None:
    bot.fake.fail_next("chat.postMessage", error)
    bot.fake.fail_next("chat.update", error)
    event = mention_event("format me")
    await bot.deliver(event)
    assert await bot.answer(event["event"]["ts"]) == ["echo: format me"]
    posts = bot.fake.calls_of("chat.postMessage")
    assert [bool(c.args.get("blocks")) for c in posts] == [True, False]
    updates = bot.fake.calls_of("chat.update")
    assert updates[0].args["blocks"] and updates[1].args["blocks"] == []


async def test_an_answer_slack_refused_is_sent_when_the_event_comes_again(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    bot.fake.fail_next("chat.postMessage", "not_in_channel")
    event = mention_event("are you there?")
    thread = event["event"]["ts"]
    assert (await bot.deliver(event)).status == 200
    await bot.fake.wait_for(lambda: bool(bot.fake.calls_of("chat.postMessage")))
    await bot.adapter.wait_idle()
    assert bot.fake.bot_messages("C1", thread) == []
    assert "not_in_channel (invite the bot" in caplog.text
    # The inbound was marked failed, so Slack's redelivery is answered.
    assert (await bot.deliver(event, retry=1)).status == 200
    assert await bot.answer(thread) == ["echo: are you there?"]


async def test_a_signed_but_malformed_event_is_acknowledged_and_logged(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    payload = mention_event("no id")
    del payload["event_id"]
    assert (await bot.deliver(payload)).status == 200
    assert "malformed event" in caplog.text
    garbage = "this is not json"
    headers = {"Content-Type": "application/json", **sign(SECRET, garbage)}
    async with bot.session.post(bot.url, data=garbage, headers=headers) as response:
        assert response.status == 400
    assert bot.fake.bot_messages() == []


async def test_the_answer_streams_through_paced_edits(bot: Bot) -> None:
    words = [f"part{i}" for i in range(40)]
    bot.backend.enqueue(" ".join(words), chunk_delay=0.01)
    event = mention_event("stream please")
    await bot.deliver(event)
    assert await bot.answer(event["event"]["ts"]) == [" ".join(words)]
    updates = bot.fake.calls_of("chat.update")
    texts = [unescape(c.args["text"]) for c in updates]
    assert len(updates) >= 3  # intermediate edits, then the final one
    assert all(" ".join(words).startswith(t) for t in texts)
    # Intermediate edits come no faster than one per edit_interval (0.05 s) on
    # average; single gaps jitter with request latency.
    paced = updates[:-1]
    assert paced[-1].at - paced[0].at >= 0.05 * (len(paced) - 1) * 0.8
    assert bot.fake.rate_limited == []


async def test_slash_command_over_socket_mode(socket_bot: SlackAdapter, fake: FakeSlack) -> None:
    from urllib.parse import parse_qsl

    form = dict(parse_qsl(slash_command("reset", response_url=fake.response_url(), channel="D1")))
    ack = await fake.wait_for_ack(await fake.send_envelope(form, kind="slash_commands"))
    assert ack["envelope_id"]
    await fake.wait_for(lambda: bool(fake.webhook_posts))
    assert "forgotten this conversation" in fake.webhook_posts[0]["text"]


async def test_two_messages_in_a_thread_are_answered_in_their_order(bot: Bot) -> None:
    first = mention_event("first question")
    thread = first["event"]["ts"]
    # Slack is slow to take the first message's reaction; the second's is not.
    bot.fake.hold("reactions.add", "C1", ts=thread)
    assert (await bot.deliver(first)).status == 200
    second = message_event(
        "second question", channel="C1", channel_type="channel", thread_ts=thread
    )
    assert (await bot.deliver(second)).status == 200
    expected = ["echo: first question", "echo: second question"]
    try:
        # Both are answered, in order, while the reaction is still on its way.
        await bot.fake.wait_for(
            lambda: [unescape(m.text) for m in bot.fake.bot_messages("C1", thread)] == expected
        )
    finally:
        bot.fake.release("reactions.add", "C1", ts=thread)
    assert await bot.answer(thread, count=2) == expected
    assert ("C1", thread, "eyes") in bot.fake.reactions
    questions = [r.messages[-1].content for r in bot.backend.requests]
    assert questions == ["first question", "second question"]
