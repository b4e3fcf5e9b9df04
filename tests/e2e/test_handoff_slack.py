"""The human handoff into a Slack support channel, through `deskmate run`.

The whole bot as an operator starts it: a subprocess configured by environment
variables only, the local fake Slack (HTTP Events API, signed deliveries,
``block_actions`` clicks), the fake OpenAI-compatible model server (which
counts the model's requests), the fake Telegram Bot API for a Telegram
customer, and a database that is SQLite or PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from adapters.slack.convert import unescape
from tests.conftest import POSTGRES_ADMIN_URL, _postgres_available, _run
from tests.e2e.processes import spawn_deskmate, wait_healthy
from tests.fakes.slack_api import FakeSlack, Message, deliver, message_event
from tests.fakes.telegram_api import FakeTelegram
from tests.llm.fake_openai import FakeOpenAI
from tests.support import free_port

SECRET = "handoff-signing-secret"
SPACE = "CSUP"
AGENT = "UAGENT"
SIGNATURE = "Ann at Acme Support"
JOINED = f"A person from the support team ({SIGNATURE}) has joined the conversation."
RESOLVED = "The support team marked this conversation as resolved"
# After kill -9 a PostgreSQL outbox row stays claimed until its 60 s lease ends.
AFTER_RESTART = 120.0


@dataclass
class Deskmate:
    """One `deskmate run` process; its output goes to a file (a pipe nobody
    reads would stall it)."""

    proc: asyncio.subprocess.Process
    base: str
    log: Path

    @classmethod
    async def start(cls, tmp_path: Path, env: dict[str, str]) -> Deskmate:
        port = free_port()
        log = tmp_path / f"deskmate-{uuid.uuid4().hex[:6]}.log"
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SLACK_"))},
            "DESKMATE_DATA_DIR": str(tmp_path / "data"),
            "PORT": str(port),
            **env,
        }
        with log.open("wb") as out:
            proc = await spawn_deskmate(full_env, out)
        deskmate = cls(proc, f"http://127.0.0.1:{port}", log)
        await wait_healthy(proc, deskmate.base, log.read_text)
        return deskmate

    @property
    def events_url(self) -> str:
        return self.base + "/slack/events"

    async def stop(self) -> str:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                await self.proc.wait()
        assert self.proc.returncode == 0, self.log.read_text()
        return self.log.read_text()

    async def kill(self) -> None:
        self.proc.kill()
        await self.proc.wait()


@dataclass
class WebCustomer:
    """A browser tab of the local web chat."""

    deskmate: Deskmate
    session: aiohttp.ClientSession
    tab: str = field(default_factory=lambda: f"tab{uuid.uuid4().hex[:12]}")
    received: list[str] = field(default_factory=list)

    async def say(self, text: str) -> str:
        body = {"session": self.tab, "text": text, "message_id": uuid.uuid4().hex}
        async with self.session.post(self.deskmate.base + "/api/chat", json=body) as response:
            assert response.status == 200, await response.text()
            return await response.text()

    async def poll(self) -> list[str]:
        url = f"{self.deskmate.base}/api/outbox?session={self.tab}"
        async with self.session.get(url) as response:
            self.received.extend((await response.json())["messages"])
        return self.received

    async def wait_for(self, text: str, within: float = 30.0) -> None:
        async with asyncio.timeout(within):
            # The page polls; there is nothing to wait on but time.
            while True:
                if any(text in m for m in await self.poll()):
                    return
                await asyncio.sleep(0.1)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database for one test (each restart in it keeps the data)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'deskmate.db'}"
        return
    import asyncpg

    if not _postgres_available():
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}")
    name = f"deskmate_handoff_{uuid.uuid4().hex[:10]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        _run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    server = await FakeSlack().start()
    yield server
    await server.stop()


@pytest.fixture
async def llm() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


def handoff_env(database_url: str, slack: FakeSlack, llm: FakeOpenAI) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "DESKMATE_LLM_URL": f"{llm.url}/v1",
        "DESKMATE_LLM_MODEL": llm.model,
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack.api_url,
        "SLACK_EDIT_INTERVAL": "0.1",
        "DESKMATE_HANDOFF_CHAT": f"slack:T1/{SPACE}",
        "DESKMATE_HANDOFF_SIGNATURE": SIGNATURE,
        # Customers come from the web chat too, beside the platforms.
        "DESKMATE_WEB_CHAT": "on",
    }


def tickets(slack: FakeSlack) -> list[Message]:
    return slack.bot_messages(SPACE, "")


def in_thread(slack: FakeSlack, ticket: Message) -> list[str]:
    return [unescape(m.text) for m in slack.bot_messages(SPACE, ticket.ts)]


async def one_ticket(slack: FakeSlack) -> Message:
    await slack.wait_for(lambda: len(tickets(slack)) == 1, within=30)
    [ticket] = tickets(slack)
    assert [b["text"]["text"] for b in slack.buttons(ticket)] == ["Claim", "Resolve"]
    return ticket


def agent_says(text: str, ticket: Message) -> dict[str, object]:
    return message_event(
        text, channel=SPACE, channel_type="channel", thread_ts=ticket.ts, user=AGENT
    )


async def test_web_chat_customer_handed_to_a_slack_channel(
    tmp_path: Path, database_url: str, slack: FakeSlack, llm: FakeOpenAI
) -> None:
    deskmate = await Deskmate.start(tmp_path, handoff_env(database_url, slack, llm))
    try:
        # The visitor's identity comes back as a cookie, kept as a browser does.
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            customer = WebCustomer(deskmate, session)
            assert "I've asked a person" in await customer.say("/human")
            ticket = await one_ticket(slack)
            assert "Ticket #1 · web" in unescape(ticket.text)
            asked = len(llm.requests)

            # The agent answers in the thread; Slack delivers it twice.
            answer = agent_says("Your parcel left the depot this morning.", ticket)
            assert await deliver(session, deskmate.events_url, SECRET, answer) == 200
            assert await deliver(session, deskmate.events_url, SECRET, answer, retry=1) == 200
            relayed = f"{SIGNATURE}: Your parcel left the depot this morning."
            await customer.wait_for(relayed)

            # The customer's follow-up goes to the thread, not to the model.
            assert await customer.say("Great, and the invoice?") == ""
            await slack.wait_for(
                lambda: any("Great, and the invoice?" in t for t in in_thread(slack, ticket)),
                within=30,
            )
            assert len(llm.requests) == asked

            # "resolve" in the thread hands the customer back to the bot.
            resolve = agent_says("resolve", ticket)
            assert await deliver(session, deskmate.events_url, SECRET, resolve) == 200
            await slack.wait_for(
                lambda: any(t.startswith("Resolved ticket #1") for t in in_thread(slack, ticket)),
                within=30,
            )
            await customer.wait_for(RESOLVED)
            assert await customer.say("When do you open?") == "echo: When do you open?"
            assert len(llm.requests) == asked + 1

            await asyncio.sleep(1.0)  # anything sent twice would have arrived by now
            await customer.poll()
            assert customer.received.count(relayed) == 1
            assert customer.received.count(JOINED) == 1
            assert len(tickets(slack)) == 1
            assert [t for t in in_thread(slack, ticket) if "invoice" in t] == [
                "web user: Great, and the invoice?"
            ]
    finally:
        await deskmate.stop()


async def test_slack_dm_customer_relay_survives_kill_9(
    tmp_path: Path, database_url: str, slack: FakeSlack, llm: FakeOpenAI
) -> None:
    env = handoff_env(database_url, slack, llm)
    deskmate = await Deskmate.start(tmp_path, env)
    relayed = f"{SIGNATURE}: I reset your password; try again now."

    def to_customer() -> list[str]:
        return [unescape(m.text) for m in slack.bot_messages("D1")]

    async with aiohttp.ClientSession() as session:
        try:
            ask = message_event("talk to a person", channel="D1", user="UCUST")
            assert await deliver(session, deskmate.events_url, SECRET, ask) == 200
            ticket = await one_ticket(slack)
            await slack.wait_for(lambda: any("asked a person" in t for t in to_customer()), 30)

            # Claim with the button: answered in the thread, the customer told.
            claim = slack.click(ticket, "Claim", user=AGENT)
            assert await deliver(session, deskmate.events_url, SECRET, claim) == 200
            await slack.wait_for(
                lambda: any("is yours" in t for t in in_thread(slack, ticket)), within=30
            )
            await slack.wait_for(lambda: JOINED in to_customer(), within=30)

            # The answer is stored, but its relay hangs until the process dies.
            slack.hold("chat.postMessage", "D1")
            answer = agent_says("I reset your password; try again now.", ticket)
            assert await deliver(session, deskmate.events_url, SECRET, answer) == 200
            await slack.wait_for(lambda: slack.held == 1, within=30)
            await deskmate.kill()
            slack.release("chat.postMessage", "D1")
            await slack.wait_for(lambda: len(slack.abandoned) == 1, within=10)
            assert relayed not in to_customer()
        except BaseException:
            if deskmate.proc.returncode is None:
                await deskmate.kill()
            raise

        deskmate = await Deskmate.start(tmp_path, env)
        try:
            await slack.wait_for(lambda: relayed in to_customer(), within=AFTER_RESTART)
            asked = len(llm.requests)
            follow = message_event("It works, thanks!", channel="D1", user="UCUST")
            assert await deliver(session, deskmate.events_url, SECRET, follow) == 200
            await slack.wait_for(
                lambda: any("It works, thanks!" in t for t in in_thread(slack, ticket)), 30
            )
            assert len(llm.requests) == asked

            resolve = slack.click(ticket, "Resolve", user=AGENT)
            assert await deliver(session, deskmate.events_url, SECRET, resolve) == 200
            await slack.wait_for(lambda: any(RESOLVED in t for t in to_customer()), within=30)
            question = message_event("What are your opening hours?", channel="D1", user="UCUST")
            assert await deliver(session, deskmate.events_url, SECRET, question) == 200
            await slack.wait_for(
                lambda: "echo: What are your opening hours?" in to_customer(), within=30
            )
            assert len(llm.requests) == asked + 1
            await asyncio.sleep(1.0)
            assert to_customer().count(relayed) == 1
            assert len(tickets(slack)) == 1
        finally:
            await deskmate.stop()


def _telegram_is_a_channel() -> bool:
    from adapters.telegram.adapter import TelegramAdapter

    return all(hasattr(TelegramAdapter, name) for name in ("post", "open_ticket"))


@pytest.mark.skipif(
    not _telegram_is_a_channel(),
    reason="the Telegram adapter does not yet post for the outbox (bot.types.Channel)",
)
async def test_telegram_customer_handed_to_a_slack_channel(
    tmp_path: Path, database_url: str, slack: FakeSlack, llm: FakeOpenAI
) -> None:
    telegram = FakeTelegram()
    await telegram.start()
    env = {
        **handoff_env(database_url, slack, llm),
        "TELEGRAM_BOT_TOKEN": telegram.token,
        "TELEGRAM_API_URL": telegram.api_url,
    }
    deskmate = await Deskmate.start(tmp_path, env)
    chat = 4242
    relayed = f"{SIGNATURE}: We have sent a new code to your e-mail."
    try:
        async with aiohttp.ClientSession() as session:
            telegram.send_user_message(chat, "/human")
            ticket = await one_ticket(slack)
            assert "Ticket #1 · telegram" in unescape(ticket.text)
            asked = len(llm.requests)

            claim = slack.click(ticket, "Claim", user=AGENT)
            assert await deliver(session, deskmate.events_url, SECRET, claim) == 200
            answer = agent_says("We have sent a new code to your e-mail.", ticket)
            assert await deliver(session, deskmate.events_url, SECRET, answer) == 200
            assert await deliver(session, deskmate.events_url, SECRET, answer, retry=1) == 200
            await telegram.wait_for(lambda: relayed in telegram.texts(chat), within=30)

            telegram.send_user_message(chat, "Got it, thank you")
            await slack.wait_for(
                lambda: any("Got it, thank you" in t for t in in_thread(slack, ticket)), 30
            )
            assert len(llm.requests) == asked

            resolve = slack.click(ticket, "Resolve", user=AGENT)
            assert await deliver(session, deskmate.events_url, SECRET, resolve) == 200
            await telegram.wait_for(
                lambda: any(RESOLVED in t for t in telegram.texts(chat)), within=30
            )
            telegram.send_user_message(chat, "Do you ship abroad?")
            await telegram.wait_for(
                lambda: "echo: Do you ship abroad?" in telegram.texts(chat), within=30
            )
            assert len(llm.requests) == asked + 1
            await asyncio.sleep(1.0)
            assert telegram.texts(chat).count(relayed) == 1
            assert len(tickets(slack)) == 1
    finally:
        try:
            await deskmate.stop()
        finally:
            await telegram.close()
