"""Manager overhead per message: inbound store -> history -> reply store.

Runs the real manager and repository on an SQLite file (WAL) with the fake
backend answering instantly, many conversations at once, and reports
messages/s. Usage:

    python bench/manager_throughput.py [--messages 3000] [--conversations 50] [--runs 5]
    python bench/manager_throughput.py --database postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import echo_manager
from bot.types import ConversationRef, Inbound, Reply


async def _drain(reply: Reply) -> None:
    async for _ in reply:
        pass


async def one_run(url: str, messages: int, conversations: int, run: int) -> float:
    manager, db = await echo_manager(url)
    per_conv = messages // conversations

    async def conversation(c: int) -> None:
        ref = ConversationRef("bench", "t", f"r{run}c{c}")
        for i in range(per_conv):
            inbound = Inbound(
                ref=ref, user=f"u{c}", text=f"question {i} from {c}", event_id=f"r{run}-{c}-{i}"
            )
            await manager.handle(inbound, _drain)

    start = time.perf_counter()
    await asyncio.gather(*(conversation(c) for c in range(conversations)))
    elapsed = time.perf_counter() - start
    await db.dispose()
    return per_conv * conversations / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database", default="", help="SQLAlchemy URL (default: temp SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{tmp}/bench.db"
        rates = [
            await one_run(url, args.messages, args.conversations, run) for run in range(args.runs)
        ]
    kind = url.split(":", 1)[0]
    print(
        f"manager throughput on {kind}: {args.messages} messages over {args.conversations} "
        f"conversations, {args.runs} runs"
    )
    print("runs (msg/s): " + ", ".join(f"{r:.0f}" for r in rates))
    print(f"median: {statistics.median(rates):.0f} messages/s")


if __name__ == "__main__":
    asyncio.run(main())
