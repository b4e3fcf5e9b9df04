"""Two ``deskmate run`` processes on one PostgreSQL database behind a "load
balancer": Telegram webhook calls of one chat spread over both, one worker
killed with SIGKILL mid-run and started again. Every message is answered
once, in its chat's order.

The model is the local fake OpenAI server, streaming each answer word by word
so that answers are in flight when the worker is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientError, ClientSession

from tests.conftest import _fresh_pg_repository
from tests.fakes.telegram_api import FakeTelegram
from tests.llm.fake_openai import FakeOpenAI, Script
from tests.support import free_port

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
SECRET = "workers-Secret_1"


class Worker:
    def __init__(self, name: str, env: dict[str, str], tmp_path: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/telegram/webhook"
        self.env = {
            **env,
            "PORT": str(self.port),
            "TELEGRAM_WEBHOOK_URL": self.url,
            "DESKMATE_DATA_DIR": str(tmp_path / name),
        }
        self.log = tmp_path / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("a") as log:
            log.write("--- start\n")
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "run",
                cwd=ROOT, env=self.env, stdout=log, stderr=log,
            )  # fmt: skip

    async def ready(self, session: ClientSession, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while True:
            assert self.proc is not None and self.proc.returncode is None, self.logs()
            with contextlib.suppress(ClientError, OSError):
                async with session.get(f"http://127.0.0.1:{self.port}/healthz") as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} never became ready:\n{self.logs()}")
            await asyncio.sleep(0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture
async def workers(
    fake: FakeTelegram, postgres_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Worker, Worker, FakeOpenAI]]:
    repository = await _fresh_pg_repository(postgres_url)  # an empty schema
    await repository.aclose()
    model = FakeOpenAI()
    await model.start()
    # Each answer streams over about half a second.
    model.script(*[Script(chunk_delay=0.12) for _ in range(500)])
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TELEGRAM_BOT_TOKEN": fake.token,
        "TELEGRAM_API_URL": fake.api_url,
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "TELEGRAM_EDIT_INTERVAL": "0.2",
        "DATABASE_URL": postgres_url,
        "DESKMATE_LLM_URL": model.url,
        "DESKMATE_LLM_TIMEOUT": "20",
        "DESKMATE_USER_RATE": "0",
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "INFO",
    }
    pair = (Worker("a", env, tmp_path), Worker("b", env, tmp_path))
    yield pair[0], pair[1], model
    for worker in pair:
        if worker.alive():
            worker.proc.terminate()  # type: ignore[union-attr]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.proc.wait(), 20)  # type: ignore[union-attr]
            if worker.alive():
                worker.proc.kill()  # type: ignore[union-attr]
        print(f"=== {worker.name}\n{worker.logs()}")  # shown when the test failed
    await model.stop()


async def test_two_workers_answer_each_chat_in_order_once_through_a_kill(
    fake: FakeTelegram, workers: tuple[Worker, Worker, FakeOpenAI]
) -> None:
    a, b, _model = workers
    chats = (101, 102, 103, 104)
    rounds = 6
    async with ClientSession() as session:
        await asyncio.gather(a.start(), b.start())
        await asyncio.gather(a.ready(session), b.ready(session))

        async def deliver(update: dict[str, object], prefer: Worker) -> None:
            """The load balancer: the preferred worker, or the other one while it is down."""
            for worker in (prefer, b if prefer is a else a):
                if not worker.alive():
                    continue
                with contextlib.suppress(ClientError, OSError):
                    async with session.post(
                        worker.url,
                        json=update,
                        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
                    ) as resp:
                        if resp.status == 200:
                            return
            raise AssertionError(f"no worker took update {update['update_id']}")

        asked: dict[int, list[str]] = {chat: [] for chat in chats}
        for n in range(rounds):
            if n == rounds // 2:
                # Answers are streaming on both workers right now.
                await asyncio.sleep(0.3)
                await a.kill()
            if n == rounds // 2 + 1:
                await a.start()
                await a.ready(session)
            for i, chat in enumerate(chats):
                text = f"question {n} of chat {chat}"
                asked[chat].append(text)
                await deliver(fake.message_update(chat, text), a if (n + i) % 2 == 0 else b)
            await asyncio.sleep(0.15)

        expected = {chat: [f"echo: {t}" for t in asked[chat]] for chat in chats}

        def complete(chat: int) -> list[str]:
            return [t for t in fake.texts(chat) if t in expected[chat]]

        # A killed worker's claims lapse after the claim lease (15 s).
        await fake.wait_for(
            lambda: all(len(complete(c)) >= rounds for c in chats),
            within=45,
            what="every answer",
        )
        await asyncio.sleep(1.0)  # room for a duplicate to show up
        for chat in chats:
            assert complete(chat) == expected[chat], fake.texts(chat)
            # Anything else is an answer cut off by the kill, and re-given whole.
            for text in fake.texts(chat):
                assert any(e.startswith(text) for e in expected[chat]), text
