"""An agent's answer to a web chat customer waits in the database, not in the
process that relayed it: ``deskmate run`` stopped before the page polled, and
started again, still hands it to the page, once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.test_handoff_telegram import (
    AGENT,
    GROUP,
    SIGNATURE,
    WEBHOOK_SECRET,
    Deskmate,
    _sql,
    ticket_message,
)
from tests.fakes.telegram_api import FakeTelegram
from tests.llm.fake_openai import FakeOpenAI


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'deskmate.db'}"
    url = str(request.getfixturevalue("postgres_url"))
    await _sql(url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    return url


@pytest.fixture
async def deskmate(
    fake: FakeTelegram, database_url: str, tmp_path: Path
) -> AsyncIterator[Deskmate]:
    model = FakeOpenAI()
    await model.start()
    made = Deskmate(
        tmp_path,
        {
            "DATABASE_URL": database_url,
            "DESKMATE_LLM_URL": model.url,
            "TELEGRAM_BOT_TOKEN": fake.token,
            "TELEGRAM_API_URL": fake.api_url,
            "DESKMATE_HANDOFF_CHAT": f"telegram:{GROUP}",
        },
    )
    made.env["TELEGRAM_WEBHOOK_URL"] = f"{made.base}/telegram/webhook"
    made.env["TELEGRAM_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    yield made
    if made.proc is not None and made.proc.returncode is None:
        made.proc.kill()
        await made.proc.wait()
    await model.stop()
    print(made.logs())  # shown by pytest only when the test failed


async def test_an_agents_answer_waits_for_the_page_through_a_restart(
    fake: FakeTelegram, deskmate: Deskmate
) -> None:
    await deskmate.start()
    tab = "session-" + uuid.uuid4().hex[:12]
    relayed = f"{SIGNATURE}: Yes, to all of Europe"
    # The page's identity comes back as a cookie, kept as a browser does.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as page:

        async def ask(text: str) -> str:
            body = {"session": tab, "text": text, "message_id": uuid.uuid4().hex}
            async with page.post(deskmate.base + "/api/chat", json=body) as response:
                assert response.status == 200
                return await response.text()

        async def poll() -> list[str]:
            # (``session``: what the page sent before identities; now ignored.)
            async with page.get(deskmate.base + f"/api/outbox?session={tab}") as response:
                assert response.status == 200
                return list((await response.json())["messages"])

        assert "support team" in await ask("/human")
        await fake.wait_for(lambda: bool(fake.texts(GROUP)), within=20, what="the ticket")
        ticket = ticket_message(fake, GROUP)
        answer = fake.message_update(
            GROUP, "Yes, to all of Europe", reply_to=fake.message_json(ticket), **AGENT
        )
        status, _ = await fake.deliver_webhook(answer, secret=WEBHOOK_SECRET)
        assert status == 200
        # Relayed by the outbox worker (to the page's queue) before the stop.
        for _ in range(200):
            if await _relay_sent(deskmate):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the answer was never relayed:\n{deskmate.logs()}")
        assert await deskmate.stop() == 0

        await deskmate.start()
        shown: list[str] = []
        for _ in range(100):
            shown += await poll()
            if relayed in shown:
                break
            await asyncio.sleep(0.1)
        assert relayed in shown, shown
        await asyncio.sleep(0.5)
        shown += await poll()
        assert shown.count(relayed) == 1
    assert await deskmate.stop() == 0


async def _relay_sent(deskmate: Deskmate) -> bool:
    """Whether the outbox row of the agent's answer to the customer is sent."""
    url = deskmate.env["DATABASE_URL"]
    query = (
        "SELECT count(*) FROM outbox "
        "WHERE kind = 'to_customer' AND status = 'sent' AND platform = 'web'"
    )
    if url.startswith("sqlite:///"):
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return bool(conn.execute(query).fetchone()[0])
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return bool(await conn.fetchval(query))
    finally:
        await conn.close()
