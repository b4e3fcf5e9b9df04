"""Rating a resolved ticket with a button, through a real ``deskmate run``.

Two customers, one on Telegram (long polling) and one on Slack (the HTTP
Events API), are handed to a Telegram support group; an agent resolves each
ticket there. The resolved notice carries 👍 and 👎 buttons: the Telegram
customer presses 👍, the Slack customer clicks 👎 (delivered twice), and each
rating is stored once against its ticket. Redelivered Telegram presses are
covered in tests/adapters/telegram/test_buttons.py, over polling and webhook.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from adapters.slack.convert import unescape
from tests.e2e.test_handoff_telegram import (
    AGENT,
    GROUP,
    RESOLVED,
    SLACK_SECRET,
    Deskmate,
    model,
    running,
    settle,
)
from tests.fakes.slack_api import FakeSlack, deliver, message_event, sign
from tests.fakes.telegram_api import FakeTelegram, SentMessage
from tests.llm.fake_openai import FakeOpenAI

__all__ = ["model", "running"]  # fixtures shared with the handoff scenarios

CUSTOMER = 4711  # a private chat with the bot


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'deskmate.db'}"


def ratings(database_url: str) -> list[tuple[int, str, int | None]]:
    """(ticket id, who, score) of every invitation to rate a ticket."""
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
        rows = conn.execute(
            "SELECT ticket_id, user_id, score FROM ratings WHERE ticket_id IS NOT NULL "
            "ORDER BY ticket_id"
        ).fetchall()
    return [(int(t), str(u), s) for t, u, s in rows]


def tickets_in(fake: FakeTelegram) -> list[SentMessage]:
    return [m for m in fake.messages[GROUP] if m.text.startswith("Ticket #")]


async def test_customers_rate_resolved_tickets_with_buttons(
    fake: FakeTelegram,
    model: FakeOpenAI,
    database_url: str,
    running: Callable[[dict[str, str]], Deskmate],
) -> None:
    slack = await FakeSlack().start()
    try:
        deskmate = running(
            {
                "DESKMATE_HANDOFF_CHAT": f"telegram:{GROUP}",
                "DESKMATE_ASK_RATING": "handoff",
                "SLACK_BOT_TOKEN": "xoxb-test",
                "SLACK_SIGNING_SECRET": SLACK_SECRET,
                "SLACK_API_URL": slack.api_url,
                "SLACK_EDIT_INTERVAL": "0.1",
            }
        )
        await deskmate.start()
        events = deskmate.base + "/slack/events"

        def slack_customer_sees() -> list[str]:
            return [unescape(m.text) for m in slack.bot_messages("D1")]

        async with aiohttp.ClientSession() as session:

            async def slack_says(text: str) -> None:
                body = json.dumps(message_event(text))
                headers = {"Content-Type": "application/json", **sign(SLACK_SECRET, body)}
                async with session.post(events, data=body, headers=headers) as response:
                    assert response.status == 200

            async def resolve(ticket: SentMessage) -> None:
                fake.send_user_message(
                    GROUP, "/resolve", reply_to=fake.message_json(ticket), **AGENT
                )

            # -- the Telegram customer: 👍 ------------------------------------------------
            fake.send_user_message(CUSTOMER, "I want to talk to a person")
            await fake.wait_for(lambda: len(tickets_in(fake)) == 1, within=20, what="ticket 1")
            await resolve(tickets_in(fake)[0])
            await fake.wait_for(
                lambda: any(m.text.startswith(RESOLVED) for m in fake.messages[CUSTOMER]),
                within=20,
                what="the resolved notice",
            )
            [notice] = [m for m in fake.messages[CUSTOMER] if m.text.startswith(RESOLVED)]
            assert notice.buttons() == [("👍", "/rate good"), ("👎", "/rate bad")]
            press = fake.push(fake.press(notice, "👍", user_id=CUSTOMER))
            await fake.wait_for(
                lambda: "Thanks for the feedback!" in fake.texts(CUSTOMER), within=20
            )
            query = press["callback_query"]["id"]
            await fake.wait_for(lambda: fake.queries[query]["answered"] == 1, what="answered")

            # -- the Slack customer: 👎 ---------------------------------------------------
            await slack_says("I want to talk to a person")
            await fake.wait_for(lambda: len(tickets_in(fake)) == 2, within=20, what="ticket 2")
            await resolve(tickets_in(fake)[1])
            await slack.wait_for(
                lambda: any(t.startswith(RESOLVED) for t in slack_customer_sees()), 20
            )
            [resolved] = [
                m for m in slack.bot_messages("D1") if unescape(m.text).startswith(RESOLVED)
            ]
            buttons = [(b["text"]["text"], b["value"]) for b in slack.buttons(resolved)]
            assert buttons == [("👍", "/rate good"), ("👎", "/rate bad")]
            click = slack.click(resolved, "👎", user="U2")
            for _ in range(2):  # the same click delivered twice
                assert await deliver(session, events, SLACK_SECRET, click) == 200
            await slack.wait_for(
                lambda: slack_customer_sees()[-1].startswith("Thanks for telling us"), 20
            )
            await settle()

        assert fake.texts(CUSTOMER).count("Thanks for the feedback!") == 1
        assert sum(t.startswith("Thanks for telling us") for t in slack_customer_sees()) == 1
        first, second = (int(m.text.split()[1].removeprefix("#")) for m in tickets_in(fake))
        assert ratings(database_url) == [
            (first, f"telegram:{CUSTOMER}", 1),
            (second, "slack:T1/U2", -1),
        ]
        assert await deskmate.stop() == 0
    finally:
        await slack.stop()
