"""``deskmate run`` as a real process against the fake Bot API: kill -9 and SIGTERM.

Uses the ``deskmate run`` CLI (``python -m bot run``) with ``DESKMATE_MODEL=fake``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.telegram_api import FakeTelegram
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


class Deskmate:
    """One ``deskmate run`` process; logs go to a file shown when a test fails."""

    def __init__(self, fake: FakeTelegram, tmp_path: Path) -> None:
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TELEGRAM_BOT_TOKEN": fake.token,
            "TELEGRAM_API_URL": fake.api_url,
            "TELEGRAM_EDIT_INTERVAL": "0.2",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'deskmate.db'}",
            "DESKMATE_DATA_DIR": str(tmp_path),
            "DESKMATE_MODEL": "fake",
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "LOG_LEVEL": "INFO",
        }
        self.log = tmp_path / "deskmate.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.runs = 0

    async def start(self) -> None:
        self.runs += 1
        with self.log.open("a") as log:
            log.write(f"--- run {self.runs}\n")
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "run",
                cwd=ROOT, env=self.env, stdout=log, stderr=log,
            )  # fmt: skip

    async def wait(self, within: float = 30) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), within)

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture
async def deskmate(fake: FakeTelegram, tmp_path: Path) -> AsyncIterator[Deskmate]:
    process = Deskmate(fake, tmp_path)
    yield process
    if process.proc is not None and process.proc.returncode is None:
        process.proc.kill()
        await process.proc.wait()
    print(process.logs())  # shown by pytest only when the test failed


async def wait_polling(fake: FakeTelegram, deskmate: Deskmate, calls_before: int) -> None:
    def polling() -> bool:
        assert deskmate.proc is not None
        if deskmate.proc.returncode is not None:
            raise AssertionError(f"deskmate exited early:\n{deskmate.logs()}")
        return len(fake.calls_to("getUpdates")) > calls_before

    await fake.wait_for(polling, within=60, what="the bot to poll")


async def test_kill_9_mid_batch_then_restart_answers_each_update_once(
    fake: FakeTelegram, deskmate: Deskmate
) -> None:
    await deskmate.start()
    await wait_polling(fake, deskmate, 0)
    for chat in (1, 2, 3):
        fake.send_user_message(chat, f"early question {chat}")
    await fake.wait_for(lambda: all(fake.texts(c) for c in (1, 2, 3)), within=20)

    # The next batch is fetched by the long poll already waiting, and stored;
    # the getUpdates that would confirm it and the answers get stuck on the wire.
    await fake.wait_for(lambda: fake.long_polls == 1, what="a waiting long poll")
    fake.hold("getUpdates")
    fake.hold("sendMessage")
    late = (11, 12, 13, 14, 15)
    updates = [fake.send_user_message(chat, f"late question {chat}") for chat in late]
    await fake.wait_for(lambda: fake.held("sendMessage") == len(late), within=20)
    assert deskmate.proc is not None
    deskmate.proc.send_signal(signal.SIGKILL)
    assert await deskmate.wait() == -signal.SIGKILL
    fake.release("sendMessage")
    fake.release("getUpdates")
    await fake.wait_for(lambda: fake.held("sendMessage") == fake.held("getUpdates") == 0)
    assert all(fake.texts(c) == [] for c in late)
    # Unconfirmed: Telegram will deliver the batch again to the next process.
    assert fake.confirmed_offset <= updates[0]["update_id"]

    polls = len(fake.calls_to("getUpdates"))
    await deskmate.start()
    await wait_polling(fake, deskmate, polls)
    await fake.wait_for(lambda: all(fake.texts(c) for c in late), within=20, what="late replies")
    await asyncio.sleep(1.0)  # room for any duplicate to show up
    for chat in (1, 2, 3):
        assert fake.texts(chat) == [f"echo: early question {chat}"]
    for chat in late:
        assert fake.texts(chat) == [f"echo: late question {chat}"]

    assert deskmate.proc is not None
    deskmate.proc.send_signal(signal.SIGTERM)
    assert await deskmate.wait() == 0


async def test_sigterm_finishes_the_reply_in_hand_and_exits_0(
    fake: FakeTelegram, deskmate: Deskmate
) -> None:
    await deskmate.start()
    await wait_polling(fake, deskmate, 0)
    fake.hold("sendMessage")
    fake.send_user_message(7, "one last thing")
    await fake.wait_for(lambda: fake.held("sendMessage") == 1, within=20)
    assert deskmate.proc is not None
    deskmate.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert deskmate.proc.returncode is None, "it waits for the reply in hand"
    fake.release("sendMessage")
    assert await deskmate.wait() == 0
    assert fake.texts(7) == ["echo: one last thing"]


async def test_webhook_mode_on_the_bots_http_server(fake: FakeTelegram, deskmate: Deskmate) -> None:
    secret = "webhook-Secret_42"
    port = deskmate.env["PORT"]
    deskmate.env["TELEGRAM_WEBHOOK_URL"] = f"http://127.0.0.1:{port}/telegram/webhook"
    deskmate.env["TELEGRAM_WEBHOOK_SECRET"] = secret
    await deskmate.start()

    def registered() -> bool:
        assert deskmate.proc is not None
        if deskmate.proc.returncode is not None:
            raise AssertionError(f"deskmate exited early:\n{deskmate.logs()}")
        return fake.webhook is not None

    await fake.wait_for(registered, within=60, what="setWebhook")
    assert fake.webhook is not None and fake.webhook["secret_token"] == secret
    update = fake.message_update(42, "hello over webhook")
    assert (await fake.deliver_webhook(update, secret="guess"))[0] == 403
    status, _ = await fake.deliver_webhook(update, secret=secret)
    assert status == 200
    await fake.wait_for(lambda: fake.texts(42) == ["echo: hello over webhook"], within=20)
    assert (await fake.deliver_webhook(update, secret=secret))[0] == 200  # a redelivery
    await asyncio.sleep(0.5)
    assert fake.texts(42) == ["echo: hello over webhook"]
    assert fake.calls_to("getUpdates") == []
    assert deskmate.proc is not None
    deskmate.proc.send_signal(signal.SIGTERM)
    assert await deskmate.wait() == 0


async def test_revoked_token_stops_telegram_with_one_clear_error(
    fake: FakeTelegram, deskmate: Deskmate
) -> None:
    from aiohttp import ClientSession

    await deskmate.start()
    await wait_polling(fake, deskmate, 0)
    health = f"http://127.0.0.1:{deskmate.env['PORT']}/healthz"
    async with ClientSession() as session:
        await fake.wait_for(lambda: "Deskmate is ready" in deskmate.logs(), within=30)
        async with session.get(health) as resp:
            assert resp.status == 200
        fake.revoke_token()
        await fake.wait_for(lambda: "revoked" in deskmate.logs(), within=20, what="the error")
        polls = len(fake.calls_to("getUpdates"))
        await asyncio.sleep(1.5)
        # No retry loop: polling stopped at the 401.
        assert len(fake.calls_to("getUpdates")) == polls
        errors = [line for line in deskmate.logs().splitlines() if "401 Unauthorized" in line]
        assert len(errors) == 1
        assert "TELEGRAM_BOT_TOKEN" in errors[0] and "@BotFather" in errors[0]
        # The process keeps serving; /healthz names Telegram as the failed part.
        async with session.get(health) as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body["telegram"] == "unavailable"
        assert body["database"] == "ok"
    assert deskmate.proc is not None and deskmate.proc.returncode is None
    deskmate.proc.send_signal(signal.SIGTERM)
    assert await deskmate.wait() == 0
