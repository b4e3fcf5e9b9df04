"""Human handoff into Telegram support groups, through a real ``deskmate run``.

The process runs against the fake Bot API (and the fake Slack for a Slack
customer), with its model behind ``DESKMATE_LLM_URL`` on the fake OpenAI
server, so the tests see every request the model gets. Each scenario runs on
SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.slack.convert import unescape
from tests.e2e.processes import spawn_deskmate, wait_healthy
from tests.fakes.slack_api import FakeSlack, message_event, sign
from tests.fakes.telegram_api import FakeTelegram, SentMessage
from tests.llm.fake_openai import FakeOpenAI
from tests.support import free_port

SIGNATURE = "Acme Support"
FORUM = -1001500  # a support group with topics
GROUP = -1001600  # a support group without topics
AGENT = {"user_id": 555, "first_name": "Sam"}
SLACK_SECRET = "handoff-signing-secret"
WEBHOOK_SECRET = "handoff-Webhook_1"
RESOLVED = "The support team marked this conversation as resolved"
JOINED = f"A person from the support team ({SIGNATURE}) has joined the conversation."


class Deskmate:
    """One ``deskmate run`` at a time over the same database; logs in a file."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SLACK_"))},
            "DESKMATE_DATA_DIR": str(tmp_path / "data"),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_LEVEL": "INFO",
            "TELEGRAM_EDIT_INTERVAL": "0.1",
            "DESKMATE_HANDOFF_SIGNATURE": SIGNATURE,
            # Customers come from the web chat too, beside the platforms.
            "DESKMATE_WEB_CHAT": "on",
            # Minutes: no reminder or idle close during a test.
            "DESKMATE_HANDOFF_REMIND": "600",
            "DESKMATE_HANDOFF_IDLE": "6000",
            **env,
        }
        self.log = tmp_path / "deskmate.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.runs = 0

    async def start(self) -> None:
        self.runs += 1
        with self.log.open("a") as log:
            log.write(f"--- run {self.runs}\n")
            self.proc = await spawn_deskmate(self.env, log)
        await wait_healthy(self.proc, self.base, self.logs, attempts=300)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(self.proc.wait(), 30) == -signal.SIGKILL

    async def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 60)

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'deskmate.db'}"
    url = str(request.getfixturevalue("postgres_url"))
    await _sql(url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    return url


async def _sql(url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
async def model() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def running(
    fake: FakeTelegram, model: FakeOpenAI, database_url: str, tmp_path: Path
) -> AsyncIterator[Callable[[dict[str, str]], Deskmate]]:
    """Builds the process (start it yourself); kills what is left and shows its log."""
    made: list[Deskmate] = []

    def build(env: dict[str, str]) -> Deskmate:
        deskmate = Deskmate(
            tmp_path,
            {
                "DATABASE_URL": database_url,
                "DESKMATE_LLM_URL": model.url,
                "TELEGRAM_BOT_TOKEN": fake.token,
                "TELEGRAM_API_URL": fake.api_url,
                **env,
            },
        )
        made.append(deskmate)
        return deskmate

    yield build
    for deskmate in made:
        if deskmate.proc is not None and deskmate.proc.returncode is None:
            deskmate.proc.kill()
            await deskmate.proc.wait()
        print(deskmate.logs())  # shown by pytest only when the test failed


def ticket_message(fake: FakeTelegram, chat: int) -> SentMessage:
    [ticket] = [m for m in fake.messages[chat] if m.text.startswith("Ticket #")]
    return ticket


async def settle() -> None:
    """Room for a duplicate or a stray model request to show up."""
    await asyncio.sleep(1.0)


# -- a Slack customer, a support group with topics ------------------------------------


@pytest.mark.parametrize("forum", [True, False], ids=["topics", "no-topics"])
async def test_slack_customer_handed_to_a_telegram_group(
    fake: FakeTelegram,
    model: FakeOpenAI,
    running: Callable[[dict[str, str]], Deskmate],
    forum: bool,
) -> None:
    slack = await FakeSlack().start()
    group = FORUM if forum else GROUP
    try:
        if forum:
            fake.make_forum(FORUM)
        deskmate = running(
            {
                "DESKMATE_HANDOFF_CHAT": f"telegram:{group}",
                "SLACK_BOT_TOKEN": "xoxb-test",
                "SLACK_SIGNING_SECRET": SLACK_SECRET,
                "SLACK_API_URL": slack.api_url,
                "SLACK_EDIT_INTERVAL": "0.1",
            }
        )
        await deskmate.start()
        events = deskmate.base + "/slack/events"

        def customer_sees() -> list[str]:
            return [unescape(m.text) for m in slack.bot_messages("D1")]

        async with aiohttp.ClientSession() as session:

            async def say(text: str) -> None:
                body = json.dumps(message_event(text))
                headers = {"Content-Type": "application/json", **sign(SLACK_SECRET, body)}
                async with session.post(events, data=body, headers=headers) as response:
                    assert response.status == 200

            await say("where is my parcel?")
            await slack.wait_for(lambda: customer_sees() == ["echo: where is my parcel?"], 20)
            await say("I want to talk to a person")
            await fake.wait_for(lambda: bool(fake.texts(group)), within=20, what="the ticket")
            ticket = ticket_message(fake, group)
            assert "where is my parcel?" in ticket.text
            if forum:
                [thread] = fake.topics[FORUM]
                assert fake.topics[FORUM][thread]["forum_topic_created"]["name"].endswith("(slack)")
                assert ticket.thread_id == thread
                where: dict[str, object] = {"thread_id": thread}
            else:
                # Without topics, agents answer by replying to the ticket message.
                thread = None
                where = {"reply_to": fake.message_json(ticket)}
            await slack.wait_for(lambda: "support team" in customer_sees()[-1], 20)
            asked = len(model.requests)

            await say("it was due on Monday")
            await fake.wait_for(
                lambda: fake.texts(group, thread)[-1].endswith(": it was due on Monday"),
                what="the follow-up in the ticket",
            )
            fake.send_user_message(group, "It left the depot today", **where, **AGENT)
            relayed = f"{SIGNATURE}: It left the depot today"
            await slack.wait_for(lambda: relayed in customer_sees(), 20)
            await settle()
            assert customer_sees().count(relayed) == 1
            assert customer_sees().count(JOINED) == 1
            assert len(model.requests) == asked, "the model is not asked while a person has it"

            fake.send_user_message(group, "/resolve", **where, **AGENT)
            await slack.wait_for(lambda: customer_sees()[-1].startswith(RESOLVED), 20)
            await fake.wait_for(
                lambda: fake.texts(group, thread)[-1].startswith("Resolved ticket #"),
                what="the agent told",
            )
            await say("and the invoice?")
            await slack.wait_for(lambda: customer_sees()[-1] == "echo: and the invoice?", 20)
            assert len(model.requests) == asked + 1
        assert len(fake.topics.get(FORUM, {})) == (1 if forum else 0)
        assert len([m for m in fake.messages[group] if m.text.startswith("Ticket #")]) == 1
        assert await deskmate.stop() == 0
    finally:
        await slack.stop()


# -- a web-chat customer, a support group without topics (webhook mode) -----------------


async def test_web_customer_handed_to_a_group_without_topics(
    fake: FakeTelegram,
    model: FakeOpenAI,
    running: Callable[[dict[str, str]], Deskmate],
) -> None:
    deskmate = running({"DESKMATE_HANDOFF_CHAT": f"telegram:{GROUP}"})
    deskmate.env["TELEGRAM_WEBHOOK_URL"] = f"{deskmate.base}/telegram/webhook"
    deskmate.env["TELEGRAM_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    await deskmate.start()
    tab = "session-" + uuid.uuid4().hex[:12]
    seen: list[str] = []

    # The visitor's identity comes back as a cookie, kept as a browser does.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:

        async def ask(text: str) -> str:
            body = {"session": tab, "text": text, "message_id": uuid.uuid4().hex}
            async with session.post(deskmate.base + "/api/chat", json=body) as response:
                assert response.status == 200
                return await response.text()

        async def page_shows(predicate: Callable[[list[str]], bool]) -> None:
            """Poll the page's outbox, as the chat page does, until ``predicate(seen)``."""
            for _ in range(200):
                async with session.get(deskmate.base + f"/api/outbox?session={tab}") as response:
                    seen.extend((await response.json())["messages"])
                if predicate(seen):
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"the page never showed it; it shows {seen}")

        async def agent(update: dict[str, Any], *, times: int = 1) -> None:
            for _ in range(times):
                status, _ = await fake.deliver_webhook(update, secret=WEBHOOK_SECRET)
                assert status == 200

        assert await ask("do you ship abroad?") == "echo: do you ship abroad?"
        assert "support team" in await ask("/human")
        await fake.wait_for(lambda: bool(fake.texts(GROUP)), within=20, what="the ticket")
        ticket = ticket_message(fake, GROUP)
        assert ticket.thread_id is None and "do you ship abroad?" in ticket.text
        assert fake.calls_to("createForumTopic") == []
        asked = len(model.requests)

        assert await ask("to Norway, I mean") == ""
        await fake.wait_for(
            lambda: fake.texts(GROUP)[-1] == "web user: to Norway, I mean", what="the relay"
        )
        assert fake.messages[GROUP][-1].reply_to == ticket.message_id

        answer = fake.message_update(
            GROUP, "Yes, to all of Europe", reply_to=fake.message_json(ticket), **AGENT
        )
        await agent(answer, times=2)  # Telegram delivers it again: its answer got lost
        relayed = f"{SIGNATURE}: Yes, to all of Europe"
        await page_shows(lambda shown: relayed in shown)
        # Agents talking among themselves (no reply to a ticket) reach nobody.
        await agent(fake.message_update(GROUP, "coffee anyone?", **AGENT))
        await settle()
        await page_shows(lambda shown: True)
        assert seen.count(relayed) == 1 and seen.count(JOINED) == 1
        assert not any("coffee" in text for text in seen)
        assert len(model.requests) == asked, "the model is not asked while a person has it"

        await agent(
            fake.message_update(GROUP, "/resolve", reply_to=fake.message_json(ticket), **AGENT)
        )
        await page_shows(lambda shown: shown[-1].startswith(RESOLVED))
        await fake.wait_for(
            lambda: fake.texts(GROUP)[-1].startswith("Resolved ticket #"), what="the agent told"
        )
        assert await ask("and how long does it take?") == "echo: and how long does it take?"
        assert len(model.requests) == asked + 1
    assert len([m for m in fake.messages[GROUP] if m.text.startswith("Ticket #")]) == 1
    assert await deskmate.stop() == 0


# -- kill -9 between storing an agent's reply and relaying it -----------------------


async def test_agent_reply_is_relayed_once_across_a_kill_9(
    fake: FakeTelegram,
    model: FakeOpenAI,
    database_url: str,
    running: Callable[[dict[str, str]], Deskmate],
) -> None:
    customer = 4242
    fake.make_forum(FORUM)
    deskmate = running({"DESKMATE_HANDOFF_CHAT": f"telegram:{FORUM}"})
    await deskmate.start()
    fake.send_user_message(customer, "/human")
    await fake.wait_for(lambda: bool(fake.texts(FORUM)), within=20, what="the ticket")
    [thread] = fake.topics[FORUM]
    await fake.wait_for(lambda: len(fake.texts(customer)) == 1, what="the customer told")
    fake.send_user_message(FORUM, "/claim", thread_id=thread, **AGENT)
    await fake.wait_for(lambda: fake.texts(customer)[-1] == JOINED, what="the claim notice")

    # What cannot be relayed is said, both ways; a person opening a topic is no ticket.
    photo = {"photo": [{"file_id": "p", "file_unique_id": "pu", "width": 9, "height": 9}]}
    fake.send_user_message(customer, None, extra=photo)
    await fake.wait_for(
        lambda: "sent a photo, which I can't relay here" in fake.texts(FORUM, thread)[-1],
        what="the photo named in the ticket",
    )
    lunch = fake.open_topic(FORUM, "Lunch", by={"id": 556, "is_bot": False, "first_name": "Jo"})
    fake.push(fake.topic_created_update(FORUM, lunch))
    document = {"document": {"file_id": "d", "file_unique_id": "du", "file_name": "label.pdf"}}
    fake.send_user_message(FORUM, None, thread_id=thread, extra=document, **AGENT)
    await fake.wait_for(
        lambda: (
            fake.texts(FORUM, thread)[-1]
            == "I can only relay text to the customer; a file was not sent."
        ),
        what="the agent told the file stayed",
    )
    assert fake.texts(FORUM, lunch) == []

    fake.hold("sendMessage", customer)
    fake.send_user_message(FORUM, "Your refund is on its way", thread_id=thread, **AGENT)
    await fake.wait_for(lambda: fake.held("sendMessage", customer) == 1, what="the relay")
    await deskmate.kill()
    fake.release("sendMessage", customer)
    await fake.wait_for(lambda: fake.held("sendMessage", customer) == 0)
    relayed = f"{SIGNATURE}: Your refund is on its way"
    assert relayed not in fake.texts(customer), "a call whose client died is not delivered"
    if not database_url.startswith("sqlite"):
        # PostgreSQL may be shared by several processes, so a claim is taken
        # over only when its lease (a minute) ran out; let that minute pass.
        await _sql(database_url, "UPDATE outbox SET claimed_until = NULL WHERE status = 'pending'")

    await deskmate.start()
    await fake.wait_for(lambda: relayed in fake.texts(customer), within=20, what="the relay")
    await settle()
    assert fake.texts(customer).count(relayed) == 1
    assert fake.texts(customer).count(JOINED) == 1
    assert fake.texts(FORUM, lunch) == []
    assert await deskmate.stop() == 0
