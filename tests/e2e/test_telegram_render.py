"""Rendering replies through the real PTB ``Bot`` against the fake Bot API."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest
from telegram import Bot
from telegram.request import HTTPXRequest

from adapters.telegram.pacing import ChatLimiter
from adapters.telegram.render import ReplyView, Sender, Target
from adapters.telegram.text import MESSAGE_LIMIT, utf16_len
from bot.guard import OutputGuard
from bot.messages import say
from bot.types import ConversationRef, Reply, ReplyKind
from llm.base import GenerationRequest, TextDelta, Usage
from llm.fake import FakeBackend
from storage.repository import Repository
from tests.conftest import make_manager
from tests.fakes.telegram_api import FakeTelegram
from tests.support import make_inbound


class Recorder:
    def __init__(self) -> None:
        self.gone: list[ConversationRef] = []
        self.moved: list[tuple[ConversationRef, ConversationRef]] = []

    async def on_gone(self, ref: ConversationRef) -> None:
        self.gone.append(ref)

    async def on_migrated(self, old: ConversationRef, new: ConversationRef) -> None:
        self.moved.append((old, new))


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    request = HTTPXRequest(read_timeout=0.5, write_timeout=1, connect_timeout=1, pool_timeout=1)
    telegram_bot = Bot(fake.token, base_url=f"{fake.api_url}/bot", request=request)
    await telegram_bot.initialize()
    yield telegram_bot
    await telegram_bot.shutdown()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def sender(bot: Bot, recorder: Recorder) -> Sender:
    limiter = ChatLimiter(per_chat_interval=0.05, group_interval=0.05, global_rate=1000)
    return Sender(bot=bot, limiter=limiter, on_migrated=recorder.on_migrated, retry_delay=0.05)


def view(sender: Sender, recorder: Recorder, chat: int, **kwargs: object) -> ReplyView:
    options: dict[str, object] = {"reply_to": None, "edit_interval": 0.2, "typing_interval": 0.3}
    options.update(kwargs)
    return ReplyView(
        sender=sender,
        target=Target.from_ref(ConversationRef("telegram", "123456", str(chat))),
        on_gone=recorder.on_gone,
        **options,  # type: ignore[arg-type]
    )


def streamed(chunks: list[str], *, delay: float = 0.0, first_delay: float = 0.0) -> Reply:
    async def gen() -> AsyncIterator[str]:
        await asyncio.sleep(first_delay)
        for chunk in chunks:
            yield chunk
            await asyncio.sleep(delay)

    return Reply(ReplyKind.ANSWER, gen())


async def test_stream_edits_one_message_at_a_steady_pace(
    fake: FakeTelegram, sender: Sender, recorder: Recorder
) -> None:
    words = [f"word{i} " for i in range(40)]
    reply = streamed(words, delay=0.025, first_delay=0.7)
    started = time.monotonic()
    await view(sender, recorder, 42).render(reply)
    elapsed = time.monotonic() - started

    assert fake.texts(42) == ["".join(words)]
    # Typing went out while the model was "thinking", repeated ~every 0.3 s.
    typing = fake.calls_to("sendChatAction", 42)
    assert 2 <= len(typing) <= 4
    first_send = fake.calls_to("sendMessage", 42)[0].at
    assert all(c.at < first_send for c in typing)
    edits = fake.calls_to("editMessageText", 42)
    assert edits, "a streamed answer is shown progressively"
    # At most one edit per interval (0.2 s) over the streaming time.
    assert len(edits) <= (elapsed - 0.7) / 0.2 + 2
    gaps = [b.at - a.at for a, b in itertools.pairwise(edits)]
    assert all(gap >= 0.18 for gap in gaps)


async def test_instant_answer_is_one_message_without_typing(
    fake: FakeTelegram, sender: Sender, recorder: Recorder
) -> None:
    await view(sender, recorder, 42).render(Reply(ReplyKind.COMMAND, text="Commands: /help"))
    assert fake.texts(42) == ["Commands: /help"]
    assert fake.calls_to("sendChatAction") == []
    assert fake.calls_to("editMessageText") == []


async def test_long_answer_arrives_as_ordered_chunks(
    fake: FakeTelegram, sender: Sender, recorder: Recorder
) -> None:
    sentences = [
        f"Sentence {i} explains one more detail of the refund policy. " for i in range(170)
    ]
    text = "".join(sentences)[:10_000].rstrip() + "."
    assert len(text) >= 9_990
    chunks = [text[i : i + 300] for i in range(0, len(text), 300)]
    await view(sender, recorder, 42, edit_interval=0.05).render(streamed(chunks, delay=0.005))

    texts = fake.texts(42)
    assert len(texts) == 3
    assert "".join(texts) == text
    assert all(utf16_len(t) <= MESSAGE_LIMIT for t in texts)
    # Cuts fall on sentence boundaries.
    assert all(t.rstrip().endswith(".") for t in texts)


async def test_markup_is_sent_as_html_with_escaping(
    fake: FakeTelegram, sender: Sender, recorder: Recorder
) -> None:
    reply = Reply(ReplyKind.ANSWER, text="Use **Settings** > `a<b` & save")
    await view(sender, recorder, 42).render(reply)
    [message] = fake.messages[42]
    assert message.parse_mode == "HTML"
    assert message.text == "Use Settings > a<b & save"
    assert fake.calls_to("sendMessage")[0].params["text"] == (
        "Use <b>Settings</b> &gt; <code>a&lt;b</code> &amp; save"
    )


async def test_rejected_entities_fall_back_to_plain_text(
    fake: FakeTelegram, sender: Sender, recorder: Recorder
) -> None:
    fake.reject_entities(42)
    reply = streamed(["**Refunds** take ", "5 days."], delay=0.3)
    await view(sender, recorder, 42).render(reply)
    [message] = fake.messages[42]
    assert message.parse_mode is None
    assert message.text == "**Refunds** take 5 days."
    sends = fake.calls_to("sendMessage", 42)
    assert [c.params.get("parse_mode") for c in sends] == ["HTML", None]
    assert sends[0].error.startswith("Bad Request: can't parse entities")
    # Later edits of that message stay plain instead of failing again.
    assert all("parse_mode" not in c.params for c in fake.calls_to("editMessageText", 42))


async def test_unchanged_edit_is_not_an_error(
    fake: FakeTelegram, sender: Sender, recorder: Recorder
) -> None:
    # Telegram trims trailing whitespace, so this edit "changes nothing".
    reply = streamed(["All done.", "\n\n"], delay=0.3)
    await view(sender, recorder, 42).render(reply)
    assert fake.texts(42) == ["All done."]
    edits = fake.calls_to("editMessageText", 42)
    assert [c.error.split(":")[0] for c in edits] == ["Bad Request"]


async def test_flood_wait_delays_only_that_chat(
    fake: FakeTelegram, sender: Sender, recorder: Recorder
) -> None:
    fake.rate_limit(42, retry_after=1)
    started = time.monotonic()

    async def answer(chat: int) -> float:
        await view(sender, recorder, chat).render(Reply(ReplyKind.ANSWER, text=f"hi {chat}"))
        return time.monotonic() - started

    slow, fast = await asyncio.gather(answer(42), answer(43))
    assert fake.texts(42) == ["hi 42"] and fake.texts(43) == ["hi 43"]
    assert fast < 0.9
    assert slow >= 1.0
    assert [c.error.split(":")[0] for c in fake.calls_to("sendMessage", 42)] == [
        "Too Many Requests",
        "",
    ]


async def test_blocked_user_marks_conversation_inactive_without_retrying(
    fake: FakeTelegram, sender: Sender, recorder: Recorder
) -> None:
    fake.block(42)
    reply = streamed(["one ", "two ", "three"], delay=0.1, first_delay=0.5)
    await view(sender, recorder, 42).render(reply)
    assert reply.text == "one two three"  # the stream was still read to the end
    assert recorder.gone == [ConversationRef("telegram", "123456", "42")]
    assert len(fake.calls_to("sendMessage", 42)) == 1
    assert fake.texts(42) == []


async def test_migrated_group_gets_the_message_in_the_new_chat(
    fake: FakeTelegram, sender: Sender, recorder: Recorder
) -> None:
    fake.migrate(-55, -1009)
    await view(sender, recorder, -55, reply_to=7).render(Reply(ReplyKind.ANSWER, text="Hello"))
    assert fake.texts(-1009) == ["Hello"]
    assert recorder.moved == [
        (
            ConversationRef("telegram", "123456", "-55"),
            ConversationRef("telegram", "123456", "-1009"),
        )
    ]
    # The old chat's message id means nothing in the new chat.
    assert fake.messages[-1009][0].reply_to is None


@pytest.mark.parametrize("applied", [True, False], ids=["arrived", "lost"])
async def test_timed_out_send_is_completed_from_what_telegram_has(
    fake: FakeTelegram, sender: Sender, recorder: Recorder, applied: bool
) -> None:
    question = fake.message_update(42, "is my ticket open?")
    fake.message_update(42, "hello?")  # the customer writes again meanwhile
    # The answer comes after the client's read timeout (0.5 s); Telegram
    # carried the send out, or never did.
    fake.stall("sendMessage", 1.0, apply=applied)
    reply = streamed(["Your ticket ", "is open."], delay=0.2)
    after = question["message"]["message_id"]
    await view(sender, recorder, 42, after=after).render(reply)
    assert fake.texts(42) == ["Your ticket is open."]
    assert len(fake.calls_to("sendMessage", 42)) == (1 if applied else 2)
    assert reply.text == "Your ticket is open."


async def test_send_whose_fate_cannot_be_told_fails_the_reply(
    fake: FakeTelegram, sender: Sender, recorder: Recorder
) -> None:
    from adapters.telegram.render import DeliveryUncertain

    fake.stall("sendMessage", 1.0)
    reply = streamed(["Your ticket ", "is open."], delay=0.2)
    # Nothing known in the chat to look after: it cannot be found out.
    with pytest.raises(DeliveryUncertain):
        await view(sender, recorder, 42).render(reply)
    assert len(fake.calls_to("sendMessage", 42)) == 1
    assert reply.text == "Your ticket is open."  # still read to the end


async def test_timed_out_edit_that_never_happened_is_retried(
    fake: FakeTelegram, sender: Sender, recorder: Recorder
) -> None:
    fake.stall("editMessageText", 1.0, apply=False)
    reply = streamed(["Your ticket ", "is open."], delay=0.3)
    await view(sender, recorder, 42).render(reply)
    assert fake.texts(42) == ["Your ticket is open."]


async def test_timed_out_edit_is_retried(
    fake: FakeTelegram, sender: Sender, recorder: Recorder
) -> None:
    fake.stall("editMessageText", 1.0)
    reply = streamed(["Your ticket ", "is open."], delay=0.3)
    await view(sender, recorder, 42).render(reply)
    assert fake.texts(42) == ["Your ticket is open."]
    assert len(fake.calls_to("sendMessage", 42)) == 1


async def test_deleted_message_mid_stream_is_shown_again(
    fake: FakeTelegram, sender: Sender, recorder: Recorder
) -> None:
    async def gen() -> AsyncIterator[str]:
        yield "Part one. "
        await asyncio.sleep(0.3)
        fake.delete_messages(42)
        yield "Part two."

    await view(sender, recorder, 42).render(Reply(ReplyKind.ANSWER, gen()))
    assert fake.texts(42) == ["Part one. Part two."]
    assert fake.calls_to("editMessageText", 42)[0].error == "Bad Request: message to edit not found"


async def test_pacing_keeps_telegrams_limits_under_load(
    fake: FakeTelegram, recorder: Recorder
) -> None:
    # Telegram's per-chat rates, the global one scaled down: 39 private chats
    # queued first take 3.9 s of the limiter's global 10/s, longer than a
    # group's spacing. The slack absorbs this loop's own lag (the fake and the
    # bot share it, and a busy machine wakes its timers late), yet two calls to
    # one chat that left the global queue back to back, 0.1 s apart, are
    # refused. Timers woken late go out together: the fake allows 15 a second,
    # and a crowd that skipped the global queue would come 39 at once.
    slack = 0.3
    fake.enforce_flood_limits(per_chat=1.0, group=3.0, global_rate=15, slack=slack)
    # A connection for every call, and time limits no busy machine reaches: a
    # call waiting for the pool, or timed out and sent again, would reach the
    # fake later than the limiter let it go, and behind the next one to its chat.
    request = HTTPXRequest(connection_pool_size=64, read_timeout=60, pool_timeout=60)
    bot = Bot(fake.token, base_url=f"{fake.api_url}/bot", request=request)
    await bot.initialize()
    limiter = ChatLimiter(per_chat_interval=1.0, group_interval=3.0, global_rate=10)
    sender = Sender(bot=bot, limiter=limiter, on_migrated=recorder.on_migrated)
    group, busy = -1000777, 500

    async def send(chat: int, text: str) -> None:
        target = Target.from_ref(ConversationRef("telegram", "123456", str(chat)))
        await sender.send_text(target, text)

    try:
        crowd = [send(chat, "hello") for chat in range(1, 40)]
        later = [send(chat, f"{n}") for n in (1, 2) for chat in (group, busy)]
        await asyncio.gather(*crowd, *later)
    finally:
        await bot.shutdown()
    assert [(c.chat_id, c.error) for c in fake.calls if c.error] == []
    assert fake.texts(group) == ["1", "2"] and fake.texts(busy) == ["1", "2"]
    group_sends = fake.calls_to("sendMessage", group)
    assert group_sends[1].at - group_sends[0].at >= 3.0 - slack
    busy_sends = fake.calls_to("sendMessage", busy)
    assert busy_sends[1].at - busy_sends[0].at >= 1.0 - slack


class LeakingBackend(FakeBackend):
    """Writes a harmless start slowly enough to be shown, then a token."""

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TextDelta]:
        self.requests.append(request)
        for word in ["Happy", " to", " help", " with", " that", " one", "!", " Our", " token"]:
            yield TextDelta(word)
            await asyncio.sleep(0.1)
        yield TextDelta(" xoxb-2048-1234567890-AbCdEfGhIjKlMnOpQrStUvWx")
        yield TextDelta(" works.", usage=Usage(prompt_tokens=10, completion_tokens=11))


async def test_a_withheld_answer_ends_as_the_notice_alone(
    fake: FakeTelegram, sender: Sender, recorder: Recorder, sqlite_repository: Repository
) -> None:
    manager = make_manager(sqlite_repository, LeakingBackend(), guard=OutputGuard())
    await manager.handle(make_inbound("which token?"), view(sender, recorder, 42).render)
    writes = fake.calls_to("sendMessage", 42) + fake.calls_to("editMessageText", 42)
    shown = [str(c.params.get("text", "")) for c in writes]
    assert any("Happy to help" in text for text in shown), "the start was streamed"
    assert not any("xoxb" in text or "token" in text for text in shown)
    assert fake.texts(42) == [say("conversation.withheld")]
