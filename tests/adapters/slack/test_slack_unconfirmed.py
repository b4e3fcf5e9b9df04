"""An outbox message Slack may have taken although the call failed is
``DeliveryUnconfirmed`` (the outbox does not send it to a customer again by
itself); real slack-sdk against the local fake Slack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.slack.adapter import SlackAdapter
from adapters.slack.convert import POST_LIMIT
from bot.types import ConversationRef, DeliveryUnconfirmed
from tests.adapters.conversations import Echo
from tests.fakes.slack_api import FakeSlack

DM = ConversationRef("slack", "T1", "D1")


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    server = await FakeSlack().start()
    yield server
    await server.stop()


@pytest.fixture
async def adapter(fake: FakeSlack) -> AsyncIterator[SlackAdapter]:
    adapter = SlackAdapter(
        bot_token="xoxb-test", signing_secret="secret", api_url=fake.api_url, edit_interval=0.5
    )
    # How long a Web API call may take; the pooled session takes it at start.
    adapter.client.timeout = 1
    await adapter.start(Echo())
    yield adapter
    await adapter.stop()


async def test_a_post_slack_did_not_answer_in_time_is_unconfirmed(
    fake: FakeSlack, adapter: SlackAdapter
) -> None:
    fake.hold("chat.postMessage", "D1")
    with pytest.raises(DeliveryUnconfirmed, match="did not confirm"):
        await adapter.post(DM, "Support: it ships today")
    fake.release("chat.postMessage", "D1")
    await asyncio.sleep(0.2)
    # Whether Slack carried the late call out or not, nothing sent it again.
    assert len(fake.bot_messages("D1")) <= 1


async def test_a_later_part_refused_after_the_first_arrived_is_unconfirmed(
    fake: FakeSlack, adapter: SlackAdapter
) -> None:
    long = ("word " * (POST_LIMIT // 4)).strip()
    posting = asyncio.create_task(adapter.post(DM, long))
    # Parts are paced half a second apart: refuse the second once the first is there.
    await fake.wait_for(lambda: len(fake.bot_messages("D1")) == 1, 5)
    fake.fail_next("chat.postMessage", "internal_error")
    with pytest.raises(DeliveryUnconfirmed, match="after the first arrived: internal_error"):
        await posting
    assert len(fake.bot_messages("D1")) == 1
