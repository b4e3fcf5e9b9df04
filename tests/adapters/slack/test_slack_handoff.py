"""The Slack side of the human handoff in one process: real Bolt and slack-sdk
against the local fake Slack, an in-memory ``Conversations`` that names one
support channel. The whole bot is in tests/e2e/test_handoff_slack.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from adapters.slack.adapter import SlackAdapter
from adapters.slack.convert import (
    Route,
    action_to_inbound,
    describe_files,
    event_to_inbound,
    route_event,
    ticket_blocks,
    unescape,
)
from bot.types import Channel, ConversationRef, Undeliverable
from tests.adapters.conversations import Echo
from tests.fakes.slack_api import (
    FakeSlack,
    block_actions_payload,
    deliver,
    mention_event,
    message_event,
)
from tests.support import serve_local

SECRET = "handoff-signing-secret"
SPACE = "CSUP"


class Desk(Echo):
    """Echo, listening to every message in the support channel."""

    def listens_to(self, ref: ConversationRef) -> bool:
        return ref.platform == "slack" and ref.tenant == "T1" and ref.chat == SPACE


@dataclass
class Bot:
    fake: FakeSlack
    adapter: SlackAdapter
    desk: Desk
    url: str
    session: aiohttp.ClientSession

    async def deliver(self, payload: dict[str, object], *, retry: int = 0) -> int:
        return await deliver(self.session, self.url, SECRET, payload, retry=retry)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    # Slack's rate limits, scaled to the adapter's edit interval (1.2 s by default).
    server = await FakeSlack(time_scale=0.05 / 1.2).start()
    yield server
    await server.stop()


@pytest.fixture
async def bot(fake: FakeSlack) -> AsyncIterator[Bot]:
    adapter = SlackAdapter(
        bot_token="xoxb-test", signing_secret=SECRET, api_url=fake.api_url, edit_interval=0.05
    )
    app = web.Application()
    app.router.add_post("/slack/events", adapter.handle_http)
    runner, port = await serve_local(app)
    desk = Desk()
    await adapter.start(desk)
    async with aiohttp.ClientSession() as session:
        yield Bot(fake, adapter, desk, f"http://127.0.0.1:{port}/slack/events", session)
    await adapter.stop()
    await runner.cleanup()


# -- conversions -----------------------------------------------------------------------


def test_support_space_takes_every_person_and_drops_the_mention_twin() -> None:
    reply = message_event("on it", channel=SPACE, channel_type="channel", thread_ts="1.000001")
    top = message_event("anyone free?", channel=SPACE, channel_type="channel")
    mention = mention_event("tickets?", channel=SPACE)
    bot_post = message_event("relayed", channel=SPACE, channel_type="channel", bot_id="BBOT")
    edit = message_event("x", channel=SPACE, channel_type="channel", subtype="message_changed")
    assert route_event(reply, listening=True) is Route.SPACE
    assert route_event(top, listening=True) is Route.SPACE
    assert route_event(mention, listening=True) is Route.IGNORE
    assert route_event(bot_post, listening=True) is Route.IGNORE
    assert route_event(edit, listening=True) is Route.IGNORE
    # Elsewhere nothing changes: a top-level line without a mention is not for us.
    assert route_event(top) is Route.IGNORE
    assert route_event(mention) is Route.MENTION

    inbound = event_to_inbound(reply, space=True)
    assert inbound.ref.thread == "1.000001" and inbound.meta["space"] is True
    # A top-level message is its own thread's root, which no ticket has.
    assert event_to_inbound(top, space=True).ref.thread == top["event"]["ts"]


def test_files_without_text_say_what_they_were() -> None:
    pdf = {"filetype": "pdf", "pretty_type": "PDF", "mimetype": "application/pdf"}
    png = {"filetype": "png", "pretty_type": "PNG", "mimetype": "image/png"}
    assert describe_files([pdf]) == "a file (PDF)"
    assert describe_files([png]) == "an image (PNG)"
    assert describe_files([pdf, png]) == "2 files"
    assert describe_files(None) == ""
    event = message_event("", subtype="file_share", files=[png])
    inbound = event_to_inbound(event)
    assert (inbound.text, inbound.meta["attachment"]) == ("", "an image (PNG)")
    assert route_event(event) is Route.DIRECT


def test_a_ticket_button_becomes_the_command_in_the_ticket_thread() -> None:
    blocks = ticket_blocks("#7 Alice (telegram)", "Ticket #7 · telegram · Alice", 7)
    assert [b["type"] for b in blocks] == ["header", "section", "actions"]
    resolve = blocks[-1]["elements"][1]
    message = {"type": "message", "ts": "1700000000.000100", "text": "t", "blocks": blocks}
    payload = block_actions_payload(
        message=message, channel=SPACE, action={**resolve, "block_id": "ticket:7"}, user="U7"
    )
    inbound = action_to_inbound(payload)
    assert inbound.ref == ConversationRef("slack", "T1", SPACE, "1700000000.000100")
    assert (inbound.text, inbound.user, inbound.meta["value"]) == ("/resolve", "T1/U7", "7")
    assert inbound.event_id.startswith("action:T1:")
    with pytest.raises(ValueError, match="not a Deskmate button"):
        action_to_inbound({**payload, "actions": [{**payload["actions"][0], "action_id": "x"}]})


# -- the outbox's channel --------------------------------------------------------------


async def test_open_ticket_posts_buttons_and_post_replies_in_its_thread(bot: Bot) -> None:
    assert isinstance(bot.adapter, Channel)
    space = ConversationRef("slack", "T1", SPACE)
    ticket = await bot.adapter.open_ticket(
        space, title="#3 Alice (web)", text="Ticket #3 · web · Alice\nWhy: asked", ticket_id=3
    )
    assert ticket.thread == ticket.message
    [posted] = bot.fake.bot_messages(SPACE)
    assert posted.ts == ticket.message and posted.thread_ts == ""
    assert [(b["text"]["text"], b["value"]) for b in bot.fake.buttons(posted)] == [
        ("Claim", "3"),
        ("Resolve", "3"),
    ]
    long = "Alice: <order> & more " * 3000
    ts = await bot.adapter.post(ConversationRef("slack", "T1", SPACE, ticket.thread), long)
    relayed = bot.fake.bot_messages(SPACE, ticket.thread)
    # Split so each message fits Slack's limits as blocks, counted escaped.
    assert len(relayed) == 8 and relayed[0].ts == ts
    assert all(m.blocks for m in relayed)
    assert bot.fake.rate_limited == []
    assert "".join(unescape(m.text) for m in relayed) == long
    # Into a DM, no thread.
    assert await bot.adapter.post(ConversationRef("slack", "T1", "D1"), "Support: hi")
    assert [m.text for m in bot.fake.bot_messages("D1")] == ["Support: hi"]


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        ("channel_not_found", True),
        ("not_in_channel", True),
        ("is_archived", True),
        ("token_revoked", True),
        ("internal_error", False),
    ],
)
async def test_refusals_retrying_cannot_fix_are_undeliverable(
    bot: Bot, error: str, permanent: bool
) -> None:
    from slack_sdk.errors import SlackApiError

    bot.fake.fail_next("chat.postMessage", error)
    expected = Undeliverable if permanent else SlackApiError
    with pytest.raises(expected, match=error):
        await bot.adapter.post(ConversationRef("slack", "T1", SPACE), "hello")
    bot.fake.fail_next("chat.postMessage", error)
    with pytest.raises(expected, match=error):
        await bot.adapter.open_ticket(
            ConversationRef("slack", "T1", SPACE), title="#1", text="t", ticket_id=1
        )


async def test_a_thread_that_is_gone_is_undeliverable(bot: Bot) -> None:
    with pytest.raises(Undeliverable, match="thread_not_found"):
        await bot.adapter.post(ConversationRef("slack", "T1", SPACE, "1600000000.000001"), "hi")


# -- the support space's messages and buttons -------------------------------------------


async def test_every_message_in_the_support_space_reaches_the_manager_once(bot: Bot) -> None:
    ticket = await bot.adapter.open_ticket(
        ConversationRef("slack", "T1", SPACE), title="#1", text="Ticket #1", ticket_id=1
    )
    reply = message_event(
        "We refunded it", channel=SPACE, channel_type="channel", thread_ts=ticket.thread, user="U7"
    )
    assert await bot.deliver(reply) == 200
    assert await bot.deliver(reply, retry=1) == 200  # Slack's retry: same event id
    photo = message_event(
        "",
        channel=SPACE,
        channel_type="channel",
        thread_ts=ticket.thread,
        user="U7",
        subtype="file_share",
        files=[{"filetype": "jpg", "pretty_type": "JPEG", "mimetype": "image/jpeg"}],
    )
    assert await bot.deliver(photo) == 200
    own = message_event(
        "Alice: hi", channel=SPACE, channel_type="channel", thread_ts=ticket.thread, bot_id="BBOT"
    )
    assert await bot.deliver(own) == 200
    assert await bot.deliver(mention_event("tickets", channel=SPACE, user="U7")) == 200
    async with asyncio.timeout(10):
        await bot.adapter.wait_idle()
    seen = [(i.text, i.ref.thread, i.meta.get("attachment")) for i in bot.desk.accepted]
    assert seen == [
        ("We refunded it", ticket.thread, None),
        ("We refunded it", ticket.thread, None),  # accepted again; the store says duplicate
        ("", ticket.thread, "an image (JPEG)"),
    ]
    assert len({i.event_id for i in bot.desk.accepted}) == 2
    assert bot.fake.reactions == []  # no 👀 on agents' lines


async def test_ticket_buttons_over_http_are_acknowledged_and_answered_in_the_thread(
    bot: Bot,
) -> None:
    ticket = await bot.adapter.open_ticket(
        ConversationRef("slack", "T1", SPACE), title="#4 Bob (web)", text="Ticket #4", ticket_id=4
    )
    [message] = bot.fake.bot_messages(SPACE, "")
    assert await bot.deliver(bot.fake.click(message, "Claim", user="U7")) == 200
    assert await bot.deliver(bot.fake.click(message, "Resolve", user="U8")) == 200
    await bot.fake.wait_for(lambda: len(bot.fake.bot_messages(SPACE, ticket.thread)) == 2)
    async with asyncio.timeout(10):
        await bot.adapter.wait_idle()
    assert [(i.text, i.user, i.ref.thread) for i in bot.desk.accepted] == [
        ("/claim", "T1/U7", ticket.thread),
        ("/resolve", "T1/U8", ticket.thread),
    ]
    assert [m.text for m in bot.fake.bot_messages(SPACE, ticket.thread)] == [
        "echo: /claim",
        "echo: /resolve",
    ]
    # Another app's button is acknowledged, never a 404 that Slack shows as an error.
    other = block_actions_payload(
        message={"type": "message", "ts": message.ts, "text": "t"},
        channel=SPACE,
        action={"type": "button", "action_id": "survey_open", "value": "1"},
    )
    assert await bot.deliver(other) == 200
    assert len(bot.desk.accepted) == 2


async def test_ticket_button_over_socket_mode(fake: FakeSlack) -> None:
    adapter = SlackAdapter(bot_token="xoxb-test", app_token=fake.app_token, api_url=fake.api_url)
    desk = Desk()
    await adapter.start(desk)
    try:
        await fake.wait_connected()
        ticket = await adapter.open_ticket(
            ConversationRef("slack", "T1", SPACE), title="#5", text="Ticket #5", ticket_id=5
        )
        [message] = fake.bot_messages(SPACE, "")
        envelope = await fake.send_envelope(fake.click(message, "Claim"), kind="interactive")
        await fake.wait_for_ack(envelope)
        await fake.wait_for(lambda: len(fake.bot_messages(SPACE, ticket.thread)) == 1)
        assert [i.text for i in desk.accepted] == ["/claim"]
    finally:
        await adapter.stop()


# -- the fake's rules --------------------------------------------------------------------


async def test_the_fake_refuses_what_slack_refuses(bot: Bot) -> None:
    from slack_sdk.errors import SlackApiError

    client = bot.adapter.client

    def button(n: int, **over: object) -> dict[str, object]:
        return {
            "type": "button",
            "action_id": f"a{n}",
            "text": {"type": "plain_text", "text": "ok"},
            **over,
        }

    bad = [
        [{"type": "actions", "elements": [button(i) for i in range(26)]}],
        [
            {
                "type": "actions",
                "elements": [button(1, text={"type": "plain_text", "text": "x" * 76})],
            }
        ],
        [{"type": "actions", "elements": [button(1, value="v" * 2001)]}],
        [{"type": "actions", "elements": [button(1, action_id="a" * 256)]}],
        [{"type": "actions", "elements": [button(1), button(1)]}],
        [{"type": "actions", "elements": []}],
    ]
    for blocks in bad:
        with pytest.raises(SlackApiError, match="invalid_blocks"):
            await client.chat_postMessage(channel=SPACE, text="t", blocks=blocks)
    good = [{"type": "actions", "elements": [button(i) for i in range(25)]}]
    await client.chat_postMessage(channel=SPACE, text="t", blocks=good)
    with pytest.raises(SlackApiError, match="thread_not_found"):
        await client.chat_postMessage(channel=SPACE, text="t", thread_ts="1500000000.000001")
