"""The Slack adapter under a slow or full model, in one process: real Bolt over
HTTP and real slack-sdk against the local fake Slack, the real manager over
SQLite, and the model behind HTTP (the fake OpenAI-compatible server)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy import select

from adapters.slack.adapter import SlackAdapter
from adapters.slack.convert import unescape
from bot.messages import say
from llm.fake import FakeBackend
from llm.openai_http import OpenAIBackend
from storage.models import inbound_events
from storage.repository import Repository
from tests.conftest import make_manager
from tests.fakes.slack_api import FakeSlack, Workspace, message_event, sign
from tests.llm.fake_openai import FakeOpenAI, Script
from tests.support import serve_local

SECRET = "load-signing-secret"
# Slack retries an event whose request was not answered within 3 seconds.
SLACK_ACK_LIMIT = 3.0


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    server = await FakeSlack(workspaces=[Workspace("T1", "xoxb-test")], time_scale=0.05).start()
    yield server
    await server.stop()


@pytest.fixture
async def model() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


async def _serve(adapter: SlackAdapter) -> tuple[aiohttp.ClientSession, str, object]:
    from aiohttp import web

    app = web.Application()
    app.router.add_post("/slack/events", adapter.handle_http)
    runner, port = await serve_local(app)
    return aiohttp.ClientSession(), f"http://127.0.0.1:{port}/slack/events", runner


async def _deliver(session: aiohttp.ClientSession, url: str, text: str, channel: str) -> float:
    """Post one signed DM event as Slack does; returns how long the answer took."""
    body = json.dumps(message_event(text, channel=channel, user=f"U{channel}"))
    headers = {"Content-Type": "application/json", **sign(SECRET, body)}
    started = time.monotonic()
    async with session.post(url, data=body, headers=headers) as response:
        await response.read()
        assert response.status == 200
    return time.monotonic() - started


def _shown(slack: FakeSlack, channel: str) -> list[str]:
    return [unescape(m.text) for m in slack.bot_messages(channel)]


async def test_slack_is_acknowledged_in_time_while_a_slow_model_answers(
    slack: FakeSlack, sqlite_repository: Repository
) -> None:
    backend = FakeBackend()
    # 3.5 seconds to the first word, 7 to the last: longer than Slack waits.
    backend.enqueue("slow answer", chunk_delay=3.5)
    backend.enqueue("the second one", chunk_delay=0.0)
    manager = make_manager(sqlite_repository, backend, llm_timeout=30.0)
    adapter = SlackAdapter(
        bot_token="xoxb-test", signing_secret=SECRET, api_url=slack.api_url, edit_interval=0.05
    )
    session, url, runner = await _serve(adapter)
    await adapter.start(manager)
    try:
        took = await _deliver(session, url, "tell me slowly", "D1")
        assert took < 1.0 < SLACK_ACK_LIMIT
        # Another message meanwhile is acknowledged as fast, and waits its turn.
        assert await _deliver(session, url, "and then?", "D1") < 1.0
        await slack.wait_for(lambda: _shown(slack, "D1")[-1:] == ["the second one"], 30)
        assert _shown(slack, "D1") == ["slow answer", "the second one"]
    finally:
        await adapter.stop()
        await session.close()
        await runner.cleanup()  # type: ignore[attr-defined]


async def test_twenty_answers_at_once_with_the_model_full_each_end_answered_or_told(
    slack: FakeSlack, model: FakeOpenAI, sqlite_repository: Repository
) -> None:
    model.max_running = 4
    # Each answer (an echo of the question) takes a second to stream.
    model.script(*[Script(chunk_delay=0.3) for _ in range(20)])
    backend = OpenAIBackend(base_url=model.url + "/v1", retries=0, retry_backoff=0.01)
    await backend.load()
    manager = make_manager(sqlite_repository, backend)  # type: ignore[arg-type]
    adapter = SlackAdapter(
        bot_token="xoxb-test", signing_secret=SECRET, api_url=slack.api_url, edit_interval=0.05
    )
    session, url, runner = await _serve(adapter)
    await adapter.start(manager)
    channels = [f"D{i}" for i in range(20)]
    busy = say("conversation.busy")
    try:
        acks = await asyncio.gather(
            *(_deliver(session, url, f"question from {c}", c) for c in channels)
        )
        assert max(acks) < SLACK_ACK_LIMIT
        await slack.wait_for(lambda: all(_shown(slack, c) for c in channels), 30)
        async with asyncio.timeout(30):
            await adapter.wait_idle()
        await asyncio.sleep(1.0)  # room for a late second message to show up
        finals = {c: _shown(slack, c) for c in channels}
        # Each person got exactly one message: the answer, or the notice that
        # the model is busy, which asks them to send it again.
        assert all(len(shown) == 1 for shown in finals.values()), finals
        told = [c for c, shown in finals.items() if shown == [busy]]
        answered = [c for c, shown in finals.items() if shown == [f"echo: question from {c}"]]
        assert len(told) + len(answered) == 20, finals
        assert told and len(answered) >= 4
        assert "send your message again" in busy
        assert model.most_running <= 4
        # Settled: nothing is left to be tried again behind the people's backs.
        query = select(inbound_events.c.status, inbound_events.c.retry_at)
        rows = await sqlite_repository.db.run(lambda conn: conn.execute(query).all())
        assert len(rows) == 20
        assert all(status in ("answered", "failed") and retry is None for status, retry in rows)

        # Sent again once the model has room, the message is answered.
        model.max_running = None
        await asyncio.gather(*(_deliver(session, url, "once more", c) for c in told))
        await slack.wait_for(
            lambda: all(_shown(slack, c)[-1] == "echo: once more" for c in told), 30
        )
        for c in told:
            assert _shown(slack, c) == [busy, "echo: once more"]
    finally:
        await adapter.stop()
        await session.close()
        await runner.cleanup()  # type: ignore[attr-defined]
        await backend.aclose()
