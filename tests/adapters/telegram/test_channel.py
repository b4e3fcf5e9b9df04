"""The adapter as the outbox's channel: real PTB against the fake Bot API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.telegram import TelegramAdapter
from adapters.telegram.adapter import TOPIC_NAME_LIMIT
from bot.types import Channel, ConversationRef, DeliveryUnconfirmed, TicketThread, Undeliverable
from tests.fakes.telegram_api import FakeTelegram

FORUM = -100111
GROUP = -100222


def ref(chat: int, thread: str = "") -> ConversationRef:
    return ConversationRef("telegram", "123456", str(chat), thread)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def adapter(fake: FakeTelegram) -> AsyncIterator[TelegramAdapter]:
    adapter = TelegramAdapter(
        token=fake.token,
        api_url=fake.api_url,
        per_chat_interval=0.0,
        group_interval=0.0,
        request_timeout=1,
        retry_delay=0.05,
    )
    await adapter.bot.initialize()
    yield adapter
    await adapter.bot.shutdown()


async def test_post_sends_and_returns_the_first_message_id(
    fake: FakeTelegram, adapter: TelegramAdapter
) -> None:
    assert isinstance(adapter, Channel)
    first = await adapter.post(ref(42), "Support team: it ships today")
    assert first == str(fake.messages[42][0].message_id)
    long = "word " * 1500  # over 4096 characters: two messages
    second = await adapter.post(ref(GROUP), long.strip(), reply_to="7")
    sent = fake.messages[GROUP]
    assert len(sent) == 2 and second == str(sent[0].message_id)
    # Only the first part quotes the message it answers.
    assert [m.reply_to for m in sent] == [7, None]


async def test_post_that_can_never_arrive_is_undeliverable(
    fake: FakeTelegram, adapter: TelegramAdapter
) -> None:
    fake.block(42)
    with pytest.raises(Undeliverable, match="blocked"):
        await adapter.post(ref(42), "hello")
    fake.make_forum(FORUM)
    with pytest.raises(Undeliverable, match="thread not found"):
        await adapter.post(ref(FORUM, "999"), "into a topic that was deleted")


async def test_post_that_may_have_arrived_is_unconfirmed_and_not_sent_again(
    fake: FakeTelegram, adapter: TelegramAdapter
) -> None:
    # Answered after the client's timeout (1 s): carried out, or never.
    fake.stall("sendMessage", 1.5, apply=True)
    with pytest.raises(DeliveryUnconfirmed, match="Timed out"):
        await adapter.post(ref(42), "Support team: it ships today")
    assert fake.texts(42) == ["Support team: it ships today"]
    # The second of two parts is lost after the first arrived.
    fake.stall("sendMessage", 0.0)
    fake.stall("sendMessage", 1.5, apply=False)
    with pytest.raises(DeliveryUnconfirmed):
        await adapter.post(ref(43), ("word " * 1500).strip())
    assert len(fake.texts(43)) == 1
    assert len(fake.calls_to("sendMessage")) == 3
    assert fake.calls_to("editMessageText") == []


async def test_ticket_in_a_forum_gets_a_topic_of_its_own(
    fake: FakeTelegram, adapter: TelegramAdapter
) -> None:
    fake.make_forum(FORUM)
    posted = await adapter.open_ticket(
        ref(FORUM), title="#1 Alice (slack)", text="Ticket #1 · slack · Alice", ticket_id=1
    )
    [topic] = fake.topics[FORUM].values()
    assert topic["forum_topic_created"]["name"] == "#1 Alice (slack)"
    [message] = fake.messages[FORUM]
    assert posted == TicketThread(thread=str(topic["message_id"]), message=str(message.message_id))
    assert message.thread_id == topic["message_id"] and message.text == "Ticket #1 · slack · Alice"
    # The relay goes into the topic.
    await adapter.post(ref(FORUM, posted.thread), "Alice: hello?")
    assert fake.texts(FORUM, topic["message_id"])[-1] == "Alice: hello?"

    long_title = "#2 " + "x" * 300
    second = await adapter.open_ticket(ref(FORUM), title=long_title, text="Ticket #2", ticket_id=2)
    names = [t["forum_topic_created"]["name"] for t in fake.topics[FORUM].values()]
    assert names[-1] == long_title[:TOPIC_NAME_LIMIT] and second.thread != posted.thread
    assert len(fake.calls_to("getChat")) == 1, "whether the group is a forum is asked once"


async def test_ticket_in_a_group_without_topics_is_a_message_to_reply_to(
    fake: FakeTelegram, adapter: TelegramAdapter
) -> None:
    posted = await adapter.open_ticket(
        ref(GROUP), title="#3 Bob (web)", text="Ticket #3", ticket_id=3
    )
    [message] = fake.messages[GROUP]
    assert posted == TicketThread(thread="", message=str(message.message_id))
    assert fake.calls_to("createForumTopic") == []
    await adapter.post(ref(GROUP), "Bob: anyone?", reply_to=posted.message)
    assert fake.messages[GROUP][-1].reply_to == message.message_id


async def test_forum_without_the_right_to_open_topics_falls_back_to_a_message(
    fake: FakeTelegram, adapter: TelegramAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    fake.make_forum(FORUM)
    fake.deny_topics(FORUM)
    posted = await adapter.open_ticket(ref(FORUM), title="#4 Cy", text="Ticket #4", ticket_id=4)
    [message] = fake.messages[FORUM]
    assert posted == TicketThread(thread="", message=str(message.message_id))
    assert message.thread_id is None
    [call] = fake.calls_to("createForumTopic")
    assert call.error == "Bad Request: not enough rights to create a topic"
    assert "'Manage topics' right" in caplog.text
    assert "not enough rights to create a topic" in caplog.text.lower()


async def test_a_retried_ticket_reuses_the_topic_it_opened(
    fake: FakeTelegram, adapter: TelegramAdapter
) -> None:
    fake.make_forum(FORUM)
    # The ticket message's answer comes too late: the outbox will try again
    # (a copy among agents beats a ticket nobody sees).
    fake.stall("sendMessage", 1.5)
    with pytest.raises(DeliveryUnconfirmed):
        await adapter.open_ticket(ref(FORUM), title="#5 Di", text="Ticket #5", ticket_id=5)
    assert len(fake.topics[FORUM]) == 1
    posted = await adapter.open_ticket(ref(FORUM), title="#5 Di", text="Ticket #5", ticket_id=5)
    [thread] = fake.topics[FORUM]
    assert posted.thread == str(thread)
    assert fake.texts(FORUM, thread)[-1] == "Ticket #5"
    assert len(fake.calls_to("createForumTopic")) == 1
