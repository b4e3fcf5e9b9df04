"""The inbox's promise under real faults: an accepted message is answered once,
in its conversation's order, across processes.

Workers here are managers over their own ``Database`` on one PostgreSQL
database (separate pools, separate worker ids), each answering through an
``AnswerTasks`` the way the adapters do. Faults are real: processes killed
with SIGKILL, a network path to PostgreSQL that is cut, a lease a live
process holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from adapters.common import AnswerTasks
from adapters.telegram.adapter import TelegramAdapter
from bot.errors import ConfigError
from bot.manager import STORAGE_DELAY_MESSAGE
from bot.types import Accepted, Reply
from llm.base import GenerationRequest, TextDelta
from llm.fake import FakeBackend
from storage.db import Database
from storage.models import inbound_events, messages
from storage.repository import InboundEvent, Repository
from tests.conftest import _fresh_pg_repository, make_manager
from tests.fakes.telegram_api import FakeTelegram
from tests.faults import TcpProxy
from tests.storage.support import make_event
from tests.support import Rendered, make_inbound

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
LEASE = 1.0


class Worker:
    """One worker: its own pool, repository, manager and answer tasks."""

    def __init__(self, url: str, backend: FakeBackend, **repo: object) -> None:
        self.repository = Repository(Database(url), claim_lease=LEASE, **repo)  # type: ignore[arg-type]
        self.manager = make_manager(self.repository, backend)
        self.seen: list[tuple[str, str]] = []  # (chat, reply text)
        self.tasks = AnswerTasks(platform="test", answer=self._answer, sweep_interval=0.1)

    async def _answer(self, accepted: Accepted) -> None:
        async def render(reply: Reply) -> None:
            text = "".join([chunk async for chunk in reply])
            self.seen.append((accepted.inbound.ref.chat, text))

        await self.manager.process(accepted, render)

    async def start(self) -> None:
        self.manager.start()
        self.tasks.replay(await self.tasks.claim_pending(self.manager))

    async def deliver(self, text: str, *, chat: str = "c1", event_id: str | None = None) -> None:
        """What an adapter does with a delivery: store it, then answer it."""
        accepted = await self.manager.accept(make_inbound(text, chat=chat, event_id=event_id))
        if not accepted.duplicate:
            self.tasks.spawn(accepted)

    async def stop(self) -> None:
        await self.tasks.drain()
        await self.manager.aclose()
        await self.repository.aclose()


class SlowFirst(FakeBackend):
    """Echoes; questions that start with "slow" take ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TextDelta]:
        if request.messages[-1].content.startswith("slow"):
            await asyncio.sleep(self.delay)
        async for delta in super().stream(request):
            yield delta


@pytest.fixture
async def db_url(postgres_url: str) -> AsyncIterator[str]:
    repository = await _fresh_pg_repository(postgres_url)
    await repository.aclose()
    yield postgres_url


async def _events(url: str) -> list[tuple[str, str, int, str | None]]:
    db = Database(url)
    try:
        return await db.run(
            lambda conn: [
                tuple(r)
                for r in conn.execute(
                    select(
                        inbound_events.c.text,
                        inbound_events.c.status,
                        inbound_events.c.attempts,
                        inbound_events.c.error,
                    ).order_by(inbound_events.c.id)
                )
            ]
        )
    finally:
        await db.dispose()


async def _answers(url: str) -> list[str]:
    db = Database(url)
    try:
        return await db.run(
            lambda conn: list(
                conn.execute(
                    select(messages.c.text)
                    .where(messages.c.role == "assistant")
                    .order_by(messages.c.id)
                ).scalars()
            )
        )
    finally:
        await db.dispose()


async def _until(predicate: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


_KILLED = """
import asyncio, os, signal, sys
from storage.db import Database
from storage.repository import InboundEvent, Repository
from tests.storage.support import make_event

async def main(url: str, mode: str) -> None:
    repository = Repository(Database(url), claim_lease={lease})
    if mode == "accept":
        await repository.accept(make_event("asked before the kill", event_id="k1"), kind="chat")
    else:
        claimed = await repository.pending("test")
        print(len(claimed), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # mid-answer, as far as anyone can tell

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def _run_and_kill(url: str, mode: str) -> str:
    """A real process that claims an event and is killed with SIGKILL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILLED.format(lease=LEASE), url, mode,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == -9
    return out.decode().strip()


# -- 2: a killed worker's claims are taken over without a restart ------------------------


async def test_a_killed_workers_message_is_answered_by_the_live_one(db_url: str) -> None:
    live = Worker(db_url, FakeBackend())
    await live.start()  # its start-up replay finds nothing: the claim is fresh
    try:
        await _run_and_kill(db_url, "accept")
        await _until(lambda: live.seen, 10 * LEASE, "the sweep to answer the orphan")
        assert live.seen == [("c1", "echo: asked before the kill")]
        await asyncio.sleep(3 * LEASE)
        assert live.seen == [("c1", "echo: asked before the kill")]
        assert await _answers(db_url) == ["echo: asked before the kill"]
    finally:
        await live.stop()


async def test_a_slow_answer_keeps_its_claim_past_the_lease(db_url: str) -> None:
    slow = Worker(db_url, SlowFirst(delay=4 * LEASE))
    other = Worker(db_url, FakeBackend())
    await slow.start()
    await other.start()
    try:
        await slow.deliver("slow question")
        await asyncio.sleep(2.5 * LEASE)
        # Well past the lease, the live answer still holds its claim.
        assert await other.manager.pending("test") == []
        await _until(lambda: slow.seen, 10 * LEASE, "the slow answer")
        await asyncio.sleep(LEASE)
        assert other.seen == []
        assert slow.seen == [("c1", "echo: slow question")]
        assert await _answers(db_url) == ["echo: slow question"]
    finally:
        await slow.stop()
        await other.stop()


# -- 3: failures retried promptly, with a bound ------------------------------------------


async def test_a_failed_delivery_is_retried_in_the_background(db_url: str) -> None:
    worker = Worker(db_url, FakeBackend(), retry_delays=(0.2,))
    calls = 0
    answer = worker._answer

    async def flaky(accepted: Accepted) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            # The platform cannot be reached for the first delivery.
            async def unreachable(reply: Reply) -> None:
                raise ConnectionRefusedError("platform unreachable")

            await worker.manager.process(accepted, unreachable)
            return
        await answer(accepted)

    worker.tasks._answer = flaky
    await worker.start()
    try:
        await worker.deliver("are you there?")
        await _until(lambda: worker.seen, 5.0, "the retry")
        assert worker.seen == [("c1", "echo: are you there?")]
        assert [e[:3] for e in await _events(db_url)] == [("are you there?", "answered", 2)]
    finally:
        await worker.stop()


async def test_a_message_that_kills_its_workers_is_given_up(db_url: str) -> None:
    await _run_and_kill(db_url, "accept")  # attempt 1
    for _ in range(2):  # attempts 2 and 3, each by a new process killed mid-answer
        await asyncio.sleep(LEASE * 1.2)
        assert await _run_and_kill(db_url, "sweep") == "1"
    await asyncio.sleep(LEASE * 1.2)
    live = Worker(db_url, FakeBackend())
    await live.start()
    try:
        await asyncio.sleep(1.0)
        assert live.seen == []
        [(_text, status, attempts, error)] = await _events(db_url)
        assert (status, attempts) == ("failed", 3)
        assert error is not None and "gave up after 3 attempts" in error
    finally:
        await live.stop()


# -- 4: the database fails mid-answer ----------------------------------------------------


class Reopenable(TcpProxy):
    """A proxy that can come back on the same port after being shut."""

    async def start_on(self, port: int) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        return port


@pytest.fixture
async def proxy(db_url: str) -> AsyncIterator[tuple[Reopenable, str]]:
    url = make_url(db_url)
    relay = Reopenable(url.host or "127.0.0.1", url.port or 5432)
    port = await relay.start()
    yield relay, url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    with contextlib.suppress(Exception):
        await relay.shut()


async def test_history_read_failing_tells_the_customer_and_leaves_it_for_the_sweep(
    db_url: str, proxy: tuple[Reopenable, str]
) -> None:
    relay, proxied = proxy
    # A previous run stored the message; this one picks it up (history not
    # read yet), and the database goes away just then.
    await _run_and_kill(db_url, "accept")
    await asyncio.sleep(LEASE * 1.2)
    repository = Repository(Database(proxied), claim_lease=LEASE, retry_delays=(0.2,))
    manager = make_manager(repository, FakeBackend())
    try:
        [accepted] = await manager.pending("test")
        await relay.shut()
        seen = Rendered()
        reply = await manager.process(accepted, seen)
        assert reply.failed
        assert seen.replies == [STORAGE_DELAY_MESSAGE]
        port = make_url(proxied).port
        assert port is not None
        await relay.start_on(port)
        # Still to be answered: a sweep once the claim lapsed gets it.
        await asyncio.sleep(LEASE * 1.2)
        [again] = await manager.pending("test")
        await manager.process(again, seen)
        assert seen.replies == [STORAGE_DELAY_MESSAGE, "echo: asked before the kill"]
    finally:
        await repository.aclose()


async def test_a_delivered_answer_whose_record_fails_is_not_answered_again(
    db_url: str, proxy: tuple[Reopenable, str]
) -> None:
    relay, proxied = proxy
    port = make_url(proxied).port
    assert port is not None
    repository = Repository(Database(proxied), claim_lease=LEASE)
    manager = make_manager(repository, FakeBackend())
    manager.start()
    seen = Rendered()

    async def render_then_lose_the_database(reply: Reply) -> None:
        await seen(reply)
        await relay.shut()  # the answer is out; its bookkeeping is not

        async def back() -> None:
            await asyncio.sleep(1.5)
            await relay.start_on(port)

        asyncio.get_running_loop().create_task(back())

    try:
        await manager.handle(
            make_inbound("remember me", event_id="m1"), render_then_lose_the_database
        )
        assert seen.replies == ["echo: remember me"]
        # Neither a redelivery nor another process's sweep answers it again.
        other = Repository(Database(db_url), claim_lease=LEASE)
        try:
            await asyncio.sleep(LEASE * 1.5)
            assert await other.pending("test") == []
            assert (await other.accept(_event("remember me", "m1"), kind="chat")).status == (
                "duplicate"
            )
        finally:
            await other.aclose()
        assert (await _answers(db_url))[-1] == "echo: remember me"
        assert (await _answers(db_url)).count("echo: remember me") == 1
    finally:
        await manager.aclose()
        await repository.aclose()


def _event(text: str, event_id: str) -> InboundEvent:
    return make_event(text, event_id=event_id)


# -- 11: order across workers ------------------------------------------------------------


async def test_one_conversation_spread_over_two_workers_is_answered_in_order(
    db_url: str,
) -> None:
    a = Worker(db_url, SlowFirst(delay=0.6))
    b = Worker(db_url, SlowFirst(delay=0.6))
    await a.start()
    await b.start()
    try:
        chats = ("c1", "c2", "c3")
        sent: dict[str, list[str]] = {c: [] for c in chats}
        for i in range(6):
            for chat in chats:
                # Every other question is slow, so a later one would overtake it.
                text = f"{'slow' if i % 2 == 0 else 'fast'} {chat} #{i}"
                sent[chat].append(text)
                worker = a if (i + chats.index(chat)) % 2 == 0 else b
                await worker.deliver(text, chat=chat)
        total = sum(len(v) for v in sent.values())
        await _until(lambda: len(a.seen) + len(b.seen) >= total, 30.0, "every answer")
        await asyncio.sleep(0.5)
        answers = await _answers(db_url)
        assert len(answers) == total
        for chat in chats:
            # The stored answers of a conversation, in the order they were given.
            mine = [t for t in answers if f" {chat} #" in t]
            assert mine == [f"echo: {t}" for t in sent[chat]]
        seen = [t for _, t in a.seen + b.seen]
        assert sorted(seen) == sorted(f"echo: {t}" for v in sent.values() for t in v)
    finally:
        await a.stop()
        await b.stop()


# -- several workers, one Telegram poller ----------------------------------------------


async def test_a_second_telegram_poller_is_refused(db_url: str) -> None:
    fake = FakeTelegram()
    await fake.start()
    first = Worker(db_url, FakeBackend())
    second = Worker(db_url, FakeBackend())
    adapters: Sequence[TelegramAdapter] = [
        TelegramAdapter(token=fake.token, api_url=fake.api_url, stop_timeout=1) for _ in range(2)
    ]
    try:
        await adapters[0].start(first.manager)
        with pytest.raises(ConfigError, match="Telegram long polling is already done by another"):
            await adapters[1].start(second.manager)
        await adapters[1].bot.shutdown()
        # Once the first one stops, a new one may poll at once.
        await adapters[0].stop()
        await first.manager.aclose()
        third = TelegramAdapter(token=fake.token, api_url=fake.api_url, stop_timeout=1)
        await third.start(second.manager)
        await third.stop()
    finally:
        await first.stop()
        await second.stop()
        await fake.close()
