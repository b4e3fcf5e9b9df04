"""Several workers under load: lost, duplicated and out-of-order answers, ack latency.

Runs two real ``deskmate run`` processes on one PostgreSQL database, Telegram
webhooks (the local fake Bot API, ``tests/fakes/telegram_api.py``) and the
local fake OpenAI server answering in 0.5-5 s (random per request). This
script is the load balancer: it posts each update to one worker (round robin,
the other one while that one is down) and times the webhook's 200 - the ack.
Midway one worker is killed with SIGKILL and started again.

Load mode (default): ``--chats`` chats x ``--messages`` messages spread over
``--duration`` seconds. Reports lost, duplicated, per-chat order violations
and ack latency p50/p95. Target: 0 lost, 0 duplicated, order kept, ack p95 < 1 s.

Soak mode (``--soak``): ``--rate`` messages a second for ``--minutes``, the
fake platform answering 1 % of calls with a 5xx and stalling 0.5 % past the
client's timeout; samples each worker's RSS and open file descriptors and
reports whether they stay flat.

Everything talks to 127.0.0.1 only; the database is a new one, dropped at the end.

Usage:
    python bench/load.py [--chats 200] [--messages 10] [--duration 300]
    python bench/load.py --soak [--minutes 30] [--rate 2]
    (--admin-url postgresql://postgres@127.0.0.1:5432/postgres)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from aiohttp import ClientError, ClientSession, ClientTimeout, web  # noqa: E402

from tests.fakes.telegram_api import FakeTelegram  # noqa: E402
from tests.llm.fake_openai import FakeOpenAI, Script  # noqa: E402
from tests.support import free_port  # noqa: E402

SECRET = "load-Secret_1"


class FaultyTelegram(FakeTelegram):
    """The fake Bot API, failing a share of calls the way a platform does."""

    def __init__(self, *, error_rate: float = 0.0, stall_rate: float = 0.0) -> None:
        super().__init__()
        self.error_rate = error_rate
        self.stall_rate = stall_rate
        self.injected = {"5xx": 0, "stall": 0}

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info.get("method", "")
        if method in ("sendMessage", "editMessageText", "sendChatAction"):
            roll = random.random()
            if roll < self.error_rate:
                self.injected["5xx"] += 1
                return web.json_response(
                    {"ok": False, "error_code": 502, "description": "Bad Gateway"}, status=502
                )
            if roll < self.error_rate + self.stall_rate:
                self.injected["stall"] += 1
                await asyncio.sleep(12)  # past the bot's 10 s request timeout
        return await super()._handle(request)


class RandomDelayModel(FakeOpenAI):
    """Echoes each question, spread over a random 0.5-5 s."""

    def script_for(self, n: int) -> None:
        # "echo: question N of chat C" streams as six pieces.
        self.script(*[Script(chunk_delay=random.uniform(0.5, 5.0) / 6) for _ in range(n)])


@dataclass
class Worker:
    name: str
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/telegram/webhook"

    async def start(self, session: ClientSession) -> None:
        env = {**self.env, "PORT": str(self.port), "TELEGRAM_WEBHOOK_URL": self.url}
        with self.log.open("a") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "run",
                cwd=ROOT, env=env, stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.alive(), self.log.read_text()[-3000:]
            with contextlib.suppress(ClientError, OSError):
                async with session.get(f"http://127.0.0.1:{self.port}/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"worker {self.name} never became ready")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()

    def sample(self) -> tuple[int, int] | None:
        """(RSS in KiB, open file descriptors), or None when not running."""
        if not self.alive():
            return None
        assert self.proc is not None
        pid = self.proc.pid
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss = next(
                int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")
            )
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):
            return None
        return rss, fds


class Balancer:
    """Posts updates round robin, skipping a worker that is down; times the acks."""

    def __init__(self, session: ClientSession, workers: list[Worker]) -> None:
        self.session = session
        self.workers = workers
        self.acks: list[float] = []
        self.refused = 0
        self._next = 0

    async def post(self, update: dict[str, Any]) -> None:
        start = self._next
        self._next += 1
        for i in range(len(self.workers) * 3):
            worker = self.workers[(start + i) % len(self.workers)]
            if not worker.alive():
                continue
            began = time.monotonic()
            with contextlib.suppress(ClientError, OSError, TimeoutError):
                async with self.session.post(
                    worker.url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
                ) as resp:
                    if resp.status == 200:
                        self.acks.append(time.monotonic() - began)
                        return
            self.refused += 1
            await asyncio.sleep(0.2)
        raise RuntimeError(f"update {update['update_id']} was taken by no worker")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def tally(fake: FakeTelegram, asked: dict[int, list[str]]) -> dict[str, int]:
    """Lost, duplicated and out-of-order answers, from what the chats show."""
    lost = duplicated = order = partial = 0
    for chat, questions in asked.items():
        expected = [f"echo: {q}" for q in questions]
        shown = fake.texts(chat)
        whole = [t for t in shown if t in expected]
        partial += len(shown) - len(whole)
        for answer in expected:
            count = whole.count(answer)
            lost += count == 0
            duplicated += max(0, count - 1)
        firsts = [a for i, a in enumerate(whole) if a not in whole[:i]]
        order += firsts != [a for a in expected if a in firsts]
    return {"lost": lost, "duplicated": duplicated, "chats_out_of_order": order, "cut_off": partial}


async def run(args: argparse.Namespace) -> None:
    name = f"deskmate_load_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = args.admin_url.rsplit("/", 1)[0]
    soak = args.soak
    fake = FaultyTelegram(error_rate=0.01 if soak else 0.0, stall_rate=0.005 if soak else 0.0)
    await fake.start()
    model = RandomDelayModel()
    await model.start()
    tmp = Path(tempfile.mkdtemp(prefix="deskmate-load-"))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TELEGRAM_BOT_TOKEN": fake.token,
        "TELEGRAM_API_URL": fake.api_url,
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "DATABASE_URL": f"{base}/{name}",
        "DESKMATE_LLM_URL": model.url,
        "DESKMATE_LLM_TIMEOUT": "30",
        "DESKMATE_USER_RATE": "0",
        # Every message reaches the model server being measured.
        "DESKMATE_COMPANY_FACTS": "answer",
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }
    workers = [Worker(f"w{i}", env, tmp / f"w{i}.log") for i in range(2)]
    samples: dict[str, list[tuple[float, int, int]]] = {w.name: [] for w in workers}
    if soak:
        total = int(args.minutes * 60 * args.rate)
        chats = min(args.chats, total)
    else:
        total = args.chats * args.messages
        chats = args.chats
    model.script_for(int(total * 1.2) + 100)
    asked: dict[int, list[str]] = {1000 + c: [] for c in range(chats)}
    try:
        async with ClientSession(timeout=ClientTimeout(total=30)) as session:
            await workers[0].start(session)  # one migrates, then the other
            await workers[1].start(session)
            balancer = Balancer(session, workers)
            interval = (1 / args.rate) if soak else args.duration / total
            began = time.monotonic()
            killed = False
            sends: set[asyncio.Task[None]] = set()

            async def sampler() -> None:
                while True:
                    for w in workers:
                        s = w.sample()
                        if s is not None:
                            samples[w.name].append((time.monotonic() - began, *s))
                    await asyncio.sleep(args.sample_every)

            sampling = asyncio.create_task(sampler())
            for n in range(total):
                chat = 1000 + n % chats
                text = f"question {len(asked[chat])} of chat {chat}"
                asked[chat].append(text)
                task = asyncio.create_task(balancer.post(fake.message_update(chat, text)))
                sends.add(task)
                task.add_done_callback(sends.discard)
                if not soak and not killed and n >= total // 2:
                    killed = True
                    await workers[0].kill()
                    print(f"{time.monotonic() - began:6.1f}s  killed w0 (SIGKILL)", flush=True)
                    # Fresh process; its start runs while the load goes on.
                    asyncio.create_task(workers[0].start(session))  # noqa: RUF006
                if n % max(1, total // 10) == 0:
                    print(f"{time.monotonic() - began:6.1f}s  sent {n}/{total}", flush=True)
                await asyncio.sleep(max(0.0, began + (n + 1) * interval - time.monotonic()))
            await asyncio.gather(*sends, return_exceptions=True)
            sent_at = time.monotonic() - began
            print(f"{sent_at:6.1f}s  all sent; waiting for the answers", flush=True)
            deadline = time.monotonic() + args.settle
            while time.monotonic() < deadline:
                if tally(fake, asked)["lost"] == 0:
                    break
                await asyncio.sleep(1.0)
            await asyncio.sleep(3.0)  # room for duplicates to show
            sampling.cancel()
            result = tally(fake, asked)
            print()
            print(f"mode: {'soak' if soak else 'load'}, {total} messages in {chats} chats, "
                  f"2 workers, sent over {sent_at:.0f} s")  # fmt: skip
            print(f"answers: {result}")
            print(f"acks: {len(balancer.acks)}, retried posts: {balancer.refused}, "
                  f"p50 {percentile(balancer.acks, 0.5) * 1000:.0f} ms, "
                  f"p95 {percentile(balancer.acks, 0.95) * 1000:.0f} ms, "
                  f"max {max(balancer.acks) * 1000:.0f} ms")  # fmt: skip
            if soak:
                print(f"platform faults injected: {fake.injected}")
            report_samples(samples, soak)
            print(f"load average: {os.getloadavg()}")
    finally:
        for w in workers:
            await w.stop()
        await fake.close()
        await model.stop()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        print(f"worker logs: {tmp}")


def report_samples(samples: dict[str, list[tuple[float, int, int]]], soak: bool) -> None:
    for name, rows in samples.items():
        if len(rows) < 4:
            continue
        # The first sixth is warm-up (imports, pools, caches filling).
        rows = rows[len(rows) // 6 :]
        quarter = max(1, len(rows) // 4)
        early, late = rows[:quarter], rows[-quarter:]
        rss0 = statistics.mean(r[1] for r in early)
        rss1 = statistics.mean(r[1] for r in late)
        fd0 = statistics.mean(r[2] for r in early)
        fd1 = statistics.mean(r[2] for r in late)
        flat = rss1 <= rss0 * 1.10 and fd1 <= fd0 + 5
        print(f"{name}: RSS {rss0 / 1024:.0f} -> {rss1 / 1024:.0f} MiB, "
              f"open fds {fd0:.0f} -> {fd1:.0f} ({len(rows)} samples)"
              + (f" - {'flat' if flat else 'GROWING'}" if soak else ""))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--soak", action="store_true")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--settle", type=float, default=120.0, help="seconds to wait for answers")
    parser.add_argument("--sample-every", type=float, default=10.0)
    parser.add_argument(
        "--admin-url",
        default=os.environ.get(
            "DESKMATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
