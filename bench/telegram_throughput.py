"""Telegram end to end: updates/s and time from update to first visible reply.

Runs the real adapter (python-telegram-bot, long polling, durable inbox), the
real manager and repository on an SQLite file, and the fake LLM answering
instantly, against the local fake Bot API server - all in this one process,
so the fake server's own work is counted too. Each update comes from its own
private chat; its reply is the first message the bot sends to that chat.

Scenarios:
  burst, no limits      all updates at once, pacing off: the adapter's own ceiling
  burst, Telegram pace  all updates at once, 1 msg/s per chat and 30 msg/s overall
  steady, Telegram pace updates arriving at --rate per second (below 30/s)

Usage:
    python bench/telegram_throughput.py [--updates 1000] [--paced-updates 300]
        [--rate 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.telegram import TelegramAdapter
from bench.support import echo_manager
from tests.fakes.telegram_api import FakeTelegram


@dataclass
class Result:
    updates_per_s: float
    p50_ms: float
    p95_ms: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def one_run(
    tmp: Path, run: int, *, updates: int, rate: float | None, telegram_pace: bool
) -> Result:
    fake = FakeTelegram()
    await fake.start()
    manager, db = await echo_manager(f"sqlite:///{tmp}/bench-{run}-{telegram_pace}-{rate}.db")
    adapter = TelegramAdapter(
        token=fake.token,
        api_url=fake.api_url,
        poll_timeout=5,
        per_chat_interval=1.0 if telegram_pace else 0.0,
        group_interval=3.0 if telegram_pace else 0.0,
        global_rate=30.0 if telegram_pace else 100_000.0,
    )
    await adapter.start(manager)
    pushed: dict[int, float] = {}
    chats = range(1_000_000 * (run + 1), 1_000_000 * (run + 1) + updates)
    start = time.monotonic()
    for i, chat in enumerate(chats):
        if rate is not None:
            due = start + i / rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
        pushed[chat] = time.monotonic()
        fake.send_user_message(chat, f"question {i}")
    await fake.wait_for(
        lambda: all(fake.messages.get(c) for c in chats), within=600, what="every reply"
    )
    elapsed = max(fake.messages[c][0].sent_at for c in chats) - start
    latencies = [(fake.messages[c][0].sent_at - pushed[c]) * 1000 for c in chats]
    await adapter.stop()
    await db.dispose()
    await fake.close()
    duplicates = [c for c in chats if len(fake.messages[c]) != 1]
    if duplicates:
        raise SystemExit(f"chats with other than one reply: {duplicates[:5]}")
    return Result(updates / elapsed, percentile(latencies, 0.5), percentile(latencies, 0.95))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=1000, help="updates per burst run")
    parser.add_argument("--paced-updates", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="updates/s of the steady run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    scenarios = [
        ("burst, no limits", args.updates, None, False),
        ("burst, Telegram pace", args.paced_updates, None, True),
        (f"steady {args.rate:g}/s, Telegram pace", args.paced_updates, args.rate, True),
    ]
    print(f"telegram end to end, median of {args.runs} runs (fake LLM, SQLite, one process)")
    print(f"{'scenario':36} {'updates':>7} {'updates/s':>10} {'p50 ms':>8} {'p95 ms':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, updates, rate, paced in scenarios:
            results = [
                await one_run(Path(tmp), run, updates=updates, rate=rate, telegram_pace=paced)
                for run in range(args.runs)
            ]
            print(
                f"{name:36} {updates:7d} "
                f"{statistics.median(r.updates_per_s for r in results):10.1f} "
                f"{statistics.median(r.p50_ms for r in results):8.1f} "
                f"{statistics.median(r.p95_ms for r in results):8.1f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
