"""Slack adapter throughput: events/s end to end and ack latency under load.

Everything real except Slack and the model. The bot runs in its own process
(Bolt in the Slack adapter on an aiohttp server, the real manager and
repository on a SQLite file or ``--database-url``, the fake LLM); this process
plays Slack: it sends signed Events API deliveries over HTTP and serves the
fake Web API (auth.test, chat.postMessage, chat.update, reactions.add) that
the bot answers through, all on 127.0.0.1.

    python bench/slack_throughput.py                 # saturation, then 50% of it
    python bench/slack_throughput.py --rate 20       # one open-loop run at 20 events/s

"Ack latency" is one delivery's HTTP round trip (Slack's deadline is 3 s, our
target 1 s). An event is "done" when its answer's final text is in the fake
Slack; events/s end to end = events / time until the last one is done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.slack_api import FakeSlack, mention_event, message_event, sign  # noqa: E402

SECRET = "bench-secret"


# -- the bot process ---------------------------------------------------------------------


async def serve_bot(
    api_url: str, database_url: str, edit_interval: float, max_answers: int
) -> None:
    from adapters.slack.adapter import SlackAdapter
    from bench.support import echo_manager

    manager, db = await echo_manager(database_url)
    adapter = SlackAdapter(
        bot_token="xoxb-test",
        signing_secret=SECRET,
        api_url=api_url,
        edit_interval=edit_interval,
        max_concurrent_answers=max_answers,
    )
    app = web.Application()
    app.router.add_post("/slack/events", adapter.handle_http)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    await adapter.start(manager)
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"PORT {port}", flush=True)
    # Run until the parent closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await adapter.stop()
    await runner.cleanup()
    await db.dispose()


# -- the load generator (this process) ---------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def make_bodies(count: int, channels: int, words: int) -> tuple[list[str], str]:
    text = " ".join(f"w{j}" for j in range(words))
    bodies = []
    for i in range(count):
        # Half DMs, half channel mentions (each mention opens its own thread).
        if i % 2:
            payload = mention_event(text, channel=f"C{i % channels}")
        else:
            payload = message_event(text, channel=f"D{i % channels}")
        bodies.append(json.dumps(payload))
    return bodies, f"echo: {text}"


async def load(
    endpoint: str, fake: FakeSlack, args: argparse.Namespace, rate: float
) -> dict[str, float]:
    bodies, answer = make_bodies(args.events, args.channels, args.words)
    before = sum(1 for m in fake.bot_messages() if m.text == answer)
    calls_before = len(fake.calls)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def send(session: aiohttp.ClientSession, body: str) -> None:
        headers = {"Content-Type": "application/json", **sign(SECRET, body)}
        started = time.perf_counter()
        async with session.post(endpoint, data=body, headers=headers) as response:
            await response.read()
        latencies.append(time.perf_counter() - started)
        statuses[response.status] = statuses.get(response.status, 0) + 1

    connector = aiohttp.TCPConnector(limit=0)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as session:
        if rate > 0:
            # Open loop: deliveries leave on schedule whatever the bot's pace.
            tasks = []
            for i, body in enumerate(bodies):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(send(session, body)))
            await asyncio.gather(*tasks)
        else:
            queue = list(reversed(bodies))

            async def worker() -> None:
                while queue:
                    await send(session, queue.pop())

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    acked = time.perf_counter() - started
    await fake.wait_for(
        lambda: sum(1 for m in fake.bot_messages() if m.text == answer) - before >= args.events,
        within=600,
    )
    done = time.perf_counter() - started
    return {
        "offered_per_s": rate,
        "ack_p50_ms": statistics.median(latencies) * 1000,
        "ack_p95_ms": percentile(latencies, 95) * 1000,
        "ack_max_ms": max(latencies) * 1000,
        "non_200": sum(n for s, n in statuses.items() if s != 200),
        "acked_per_s": args.events / acked,
        "end_to_end_per_s": args.events / done,
        "api_calls_per_event": (len(fake.calls) - calls_before) / args.events,
    }


async def main_async(args: argparse.Namespace) -> list[dict[str, float]]:
    fake = await FakeSlack().start()
    tmp = tempfile.TemporaryDirectory()
    database_url = args.database_url or f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    bot = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve-bot",
        fake.api_url,
        "--database-url",
        database_url,
        "--edit-interval",
        str(args.edit_interval),
        "--max-answers",
        str(args.max_answers),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert bot.stdout is not None
        line = (await bot.stdout.readline()).decode()
        if not line.startswith("PORT "):
            raise SystemExit(f"bot process failed to start: {line!r}")
        endpoint = f"http://127.0.0.1:{int(line.split()[1])}/slack/events"
        results = []
        # Warm up (imports, Bolt's first auth.test, SQLite pages) before measuring.
        warm = argparse.Namespace(**{**vars(args), "events": 20, "concurrency": 5})
        await load(endpoint, fake, warm, 0)
        if args.rate:
            results.append(await load(endpoint, fake, args, args.rate))
        else:
            saturated = await load(endpoint, fake, args, 0)
            results.append(saturated)
            half = round(saturated["end_to_end_per_s"] / 2, 1)
            results.append(await load(endpoint, fake, args, half))
        return results
    finally:
        assert bot.stdin is not None
        bot.stdin.close()
        try:
            async with asyncio.timeout(60):
                await bot.wait()
        except TimeoutError:
            bot.kill()
        await fake.stop()
        tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=50, help="closed loop: in flight")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop events/s (0: both)")
    parser.add_argument("--channels", type=int, default=200, help="distinct channels used")
    parser.add_argument("--words", type=int, default=12, help="words per message (and answer)")
    parser.add_argument("--edit-interval", type=float, default=1.2)
    parser.add_argument("--max-answers", type=int, default=16, help="answers in progress")
    parser.add_argument("--database-url", default="", help="default: a temporary SQLite file")
    parser.add_argument("--serve-bot", metavar="API_URL", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.serve_bot:
        asyncio.run(
            serve_bot(args.serve_bot, args.database_url, args.edit_interval, args.max_answers)
        )
        return
    results = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(results))
        return
    for result in results:
        mode = (
            f"open loop {result['offered_per_s']}/s"
            if result["offered_per_s"]
            else (f"closed loop, {args.concurrency} in flight")
        )
        print(f"-- {args.events} events, {mode}")
        for key, value in result.items():
            print(f"{key:>20}: {value:.1f}")


if __name__ == "__main__":
    main()
