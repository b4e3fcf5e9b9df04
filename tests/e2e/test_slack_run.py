"""`deskmate run` as a subprocess with Slack configured, against the local fake Slack.

The whole bot as an operator starts it: environment variables only, the fake
model (``DESKMATE_MODEL=fake``), a temporary SQLite database.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from adapters.slack.convert import unescape
from tests.e2e.processes import spawn_deskmate, wait_healthy
from tests.fakes.slack_api import FakeSlack, mention_event, message_event, sign
from tests.support import free_port

SECRET = "run-signing-secret"


class Deskmate:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.base = f"http://127.0.0.1:{port}"

    async def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            out, _ = await self.proc.communicate()
        return int(self.proc.returncode or 0), out.decode()


async def start_deskmate(tmp_path: Path, env: dict[str, str]) -> Deskmate:
    port = free_port()
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SLACK_"))},
        "DESKMATE_MODEL": "fake",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'deskmate.db'}",
        "DESKMATE_DATA_DIR": str(tmp_path / "data"),
        "PORT": str(port),
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_EDIT_INTERVAL": "0.1",
        **env,
    }
    proc = await spawn_deskmate(full_env, asyncio.subprocess.PIPE)
    deskmate = Deskmate(proc, port)
    await wait_healthy(proc, deskmate.base)
    return deskmate


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    # Slack's rate limits, scaled to the adapter's edit interval (1.2 s by default).
    server = await FakeSlack(time_scale=0.1 / 1.2).start()
    yield server
    await server.stop()


async def post_event(
    session: aiohttp.ClientSession,
    url: str,
    payload: dict[str, object],
    *,
    headers: dict[str, str] | None = None,
    retry: int = 0,
) -> int:
    body = json.dumps(payload)
    sent = {"Content-Type": "application/json", **sign(SECRET, body)}
    if retry:
        sent["X-Slack-Retry-Num"] = str(retry)
    sent.update(headers or {})
    async with session.post(url, data=body, headers=sent) as response:
        return response.status


async def test_run_answers_signed_slack_events_over_http(tmp_path: Path, fake: FakeSlack) -> None:
    deskmate = await start_deskmate(
        tmp_path, {"SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": fake.api_url}
    )
    url = deskmate.base + "/slack/events"
    try:
        async with aiohttp.ClientSession() as session:
            event = mention_event("is the shop open on Sunday?")
            thread = event["event"]["ts"]
            assert await post_event(session, url, event) == 200
            assert await post_event(session, url, event, retry=1) == 200
            await fake.wait_for(
                lambda: (
                    [unescape(m.text) for m in fake.bot_messages("C1", thread)]
                    == ["echo: is the shop open on Sunday?"]
                ),
                within=30,
            )
            # Forged and stale requests are refused, never answered.
            forged = mention_event("forged")
            assert (
                await post_event(session, url, forged, headers={"X-Slack-Signature": "v0=bad"})
                == 401
            )
            stale = {"X-Slack-Request-Timestamp": "1500000000"}
            assert await post_event(session, url, forged, headers=stale) == 401
            not_a_number = {"X-Slack-Request-Timestamp": "12:00"}
            assert await post_event(session, url, forged, headers=not_a_number) == 401
            # A DM is answered top level.
            assert await post_event(session, url, message_event("hello from a DM")) == 200
            await fake.wait_for(
                lambda: [m.text for m in fake.bot_messages("D1")] == ["echo: hello from a DM"],
                within=30,
            )
            assert await post_event(session, url, event, retry=2) == 200
    finally:
        code, log = await deskmate.stop()
    assert code == 0, log
    assert "Slack: connected as deskmate" in log
    assert len(fake.bot_messages("C1", thread)) == 1
    assert fake.bot_messages("C1", "") == []  # nothing from the forged requests


async def test_run_over_socket_mode_survives_a_reconnect(tmp_path: Path, fake: FakeSlack) -> None:
    deskmate = await start_deskmate(
        tmp_path, {"SLACK_APP_TOKEN": fake.app_token, "SLACK_API_URL": fake.api_url}
    )
    try:
        await fake.wait_connected(within=30)
        first = mention_event("socket question")
        thread = first["event"]["ts"]
        await fake.wait_for_ack(await fake.send_envelope(first), within=10)
        await fake.send_disconnect()
        await fake.wait_for_ack(await fake.send_envelope(first, retry_attempt=1), within=10)
        await fake.wait_for(
            lambda: [m.text for m in fake.bot_messages("C1", thread)] == ["echo: socket question"],
            within=30,
        )
        await asyncio.sleep(0.5)
    finally:
        code, log = await deskmate.stop()
    assert code == 0, log
    assert fake.socket_connections == 2
    assert len(fake.bot_messages("C1", thread)) == 1


async def test_sigterm_ends_the_process_within_10_s_when_slack_ignores_the_close(
    tmp_path: Path, fake: FakeSlack
) -> None:
    env = {"SLACK_APP_TOKEN": fake.app_token, "SLACK_API_URL": fake.api_url}
    fake.ignore_close = True
    deskmate = await start_deskmate(tmp_path, env)
    event = mention_event("an answer cut short")
    thread = event["event"]["ts"]
    try:
        await fake.wait_connected(within=30)
        # The answer is in progress and cannot finish: Slack sits on its edits.
        fake.hold("chat.update", "C1")
        await fake.wait_for_ack(await fake.send_envelope(event), within=10)
        await fake.wait_for(lambda: fake.held >= 1, within=30)
    except BaseException:
        deskmate.proc.kill()
        raise
    started = time.monotonic()
    deskmate.proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(30):
            out, _ = await deskmate.proc.communicate()
    except TimeoutError:
        deskmate.proc.kill()
        raise
    elapsed = time.monotonic() - started
    log = out.decode()
    fake.release("chat.update", "C1")
    # Platforms kill a process 10 s after SIGTERM; it must be gone before.
    assert elapsed < 10, f"exited {elapsed:.1f} s after SIGTERM:\n{log}"
    assert deskmate.proc.returncode == 0, log
    assert "did not answer the close" in log
    # Nothing half done is left in the thread, and nothing is lost: the event
    # is stored as unanswered and the next start answers it.
    assert fake.bot_messages("C1", thread) == []

    fake.ignore_close = False
    deskmate = await start_deskmate(tmp_path, env)
    try:
        await fake.wait_for(
            lambda: (
                [m.text for m in fake.bot_messages("C1", thread)] == ["echo: an answer cut short"]
            ),
            within=30,
        )
    finally:
        code, log = await deskmate.stop()
    assert code == 0, log
