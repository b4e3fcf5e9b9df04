"""A suggestion the model writes streams into the ticket's thread, through
the real Telegram and Slack adapters against their fakes: a placeholder
soon after the model is asked, edits as the text arrives, and the finished
suggestion with its sources and buttons as the last edit of that same
message; nothing of it reaches the customer until an agent sends it."""

from __future__ import annotations

import re

import aiohttp

from adapters.slack.convert import unescape
from bot.handoff.copilot import suggestion_body
from llm.fake import FakeBackend
from storage.repository import Repository
from tests.bot.handoff.test_copilot import DOCS
from tests.bot.knowledge.test_sources import DictSource
from tests.e2e import test_copilot_slack as on_slack
from tests.e2e import test_copilot_telegram as on_telegram
from tests.e2e.test_slack_events import SECRET
from tests.fakes.slack_api import FakeSlack, deliver, message_event
from tests.fakes.telegram_api import FakeTelegram

# Between the grounded and the verbatim score of the adapters' tests: written.
QUESTION = "shipping parcels to europe please, how long does it take"
WRITTEN = "Parcels to Europe arrive within 3 working days [1]."


def _streamed(history: list[str], final: str) -> None:
    """``history``: the texts a message showed before ``final``."""
    assert history, "the suggestion was posted whole, not streamed"
    assert "Drafting a suggested reply" in history[0], history[0]
    assert "not sent to the customer" in history[0]
    partial = [t for t in history[1:] if "Parcels" in t]
    assert partial, f"no edit showed text as it arrived: {history}"
    # Some edit showed the reply before it was whole.
    assert any(WRITTEN not in re.sub(r"\s*▍", "", t) for t in partial), history
    assert "Suggested reply #1 (written from the knowledge sources)" in final
    assert suggestion_body(final) == WRITTEN


async def test_a_written_suggestion_streams_into_a_telegram_topic(
    sqlite_repository: Repository, backend: FakeBackend, fake: FakeTelegram
) -> None:
    fake.make_forum(on_telegram.FORUM)
    running = await on_telegram._start(sqlite_repository, backend, fake)
    try:
        assert running.manager.knowledge is not None
        running.manager.knowledge.register(DictSource(DOCS))
        backend.enqueue("Wants a person.")
        fake.send_user_message(on_telegram.CUSTOMER, "/human")
        await fake.wait_for(lambda: bool(fake.topics.get(on_telegram.FORUM)), what="the topic")

        backend.enqueue(WRITTEN, chunk_delay=0.25)
        fake.send_user_message(on_telegram.CUSTOMER, QUESTION)

        def drafts() -> list[object]:
            return [
                m
                for m in fake.messages[on_telegram.FORUM]
                if "Drafting a suggested reply" in m.text or "Suggested reply #" in m.text
            ]

        await fake.wait_for(lambda: bool(drafts()), what="the placeholder")
        [placeholder] = drafts()
        assert not placeholder.buttons(), "no buttons before the suggestion is whole"
        await fake.wait_for(
            lambda: bool(placeholder.buttons()), what="the finished suggestion", within=15
        )
        assert len(drafts()) == 1, "one message, edited; not a second post"
        assert [label for label, _ in placeholder.buttons()] == ["Send", "Edit", "Discard"]
        _streamed(placeholder.edits, placeholder.text)
        assert not any("Parcels" in t for t in fake.texts(on_telegram.CUSTOMER))

        # Send relays the finished text once.
        fake.push(fake.press(placeholder, "Send", **on_telegram.AGENT))
        await fake.wait_for(
            lambda: f"Acme support: {WRITTEN}" in fake.texts(on_telegram.CUSTOMER),
            what="the sent suggestion",
        )
    finally:
        await on_telegram._stop(running)


async def test_a_written_suggestion_streams_into_a_slack_thread(
    sqlite_repository: Repository, backend: FakeBackend
) -> None:
    fake = await FakeSlack().start()
    running = await on_slack._start(sqlite_repository, backend, fake)
    try:
        assert running.manager.knowledge is not None
        running.manager.knowledge.register(DictSource(DOCS))
        async with aiohttp.ClientSession() as session:
            backend.enqueue("Wants a person.")
            assert await deliver(session, running.url, SECRET, message_event("/human")) == 200
            await fake.wait_for(lambda: any(m.thread_ts == "" for m in fake.bot_messages("C1")))
            [ticket] = [m for m in fake.bot_messages("C1") if not m.thread_ts]

            # The fake holds Slack's one write a second per channel (posts and
            # updates alike), so the stream is slow enough to show edits (and within
            # the model timeout of 5 s).
            backend.enqueue(WRITTEN, chunk_delay=0.45)
            assert await deliver(session, running.url, SECRET, message_event(QUESTION)) == 200

            def drafts() -> list[object]:
                return [
                    m
                    for m in fake.bot_messages("C1", ticket.ts)
                    if "Drafting a suggested reply" in m.text or "Suggested reply #" in m.text
                ]

            await fake.wait_for(lambda: bool(drafts()))
            [placeholder] = drafts()
            assert not fake.buttons(placeholder)
            await fake.wait_for(lambda: bool(fake.buttons(placeholder)), within=15)
            assert len(drafts()) == 1, "one message, edited; not a second post"
            labels = [b["text"]["text"] for b in fake.buttons(placeholder)]
            assert labels == ["Send", "Edit", "Discard"]
            _streamed([unescape(t) for t in placeholder.edits], unescape(placeholder.text))
            assert not any("Parcels" in unescape(m.text) for m in fake.bot_messages("D1"))
    finally:
        await on_slack._stop(running)
        await fake.stop()
