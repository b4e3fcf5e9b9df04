"""Handoff relay latency: an agent's reply in a Slack ticket thread until the
customer has it.

The bot is a real ``deskmate run`` process (Slack over the HTTP Events API,
the help desk and its outbox worker, a SQLite file or ``--database-url``, the
model behind ``DESKMATE_LLM_URL`` on the fake OpenAI-compatible server); this
process plays Slack and the model. ``--customers`` Slack DM customers each ask
for a person, which opens one ticket each in the support channel; then
``--relays`` agent replies go round those tickets, ``--concurrency`` at a time.

    python bench/handoff_relay.py                        # 300 relays, one at a time
    python bench/handoff_relay.py --concurrency 8
    python bench/handoff_relay.py --postgres             # a throwaway PostgreSQL database

Latency of one relay: from the moment the webhook answered 200 for the
agent's message (it is stored) until the fake Slack received the
``chat.postMessage`` into the customer's DM. "Round trip" adds the delivery
of the agent's message itself (from just before it was POSTed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import POSTGRES_ADMIN_URL  # noqa: E402
from tests.e2e.test_handoff_slack import (  # noqa: E402
    SECRET,
    SIGNATURE,
    Deskmate,
    agent_says,
    handoff_env,
    tickets,
)
from tests.fakes.slack_api import FakeSlack, Message, deliver, message_event  # noqa: E402
from tests.llm.fake_openai import FakeOpenAI  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def open_tickets(
    session: aiohttp.ClientSession, deskmate: Deskmate, slack: FakeSlack, customers: int
) -> dict[str, Message]:
    """One ticket per DM customer; returns DM channel -> ticket message."""
    for i in range(customers):
        ask = message_event("talk to a person", channel=f"D{i}", user=f"UCUST{i}")
        assert await deliver(session, deskmate.events_url, SECRET, ask) == 200
    await slack.wait_for(lambda: len(tickets(slack)) == customers, within=120)
    by_customer: dict[str, Message] = {}
    for ticket in tickets(slack):
        i = next(i for i in range(customers) if f"T1/UCUST{i} " in ticket.text)
        by_customer[f"D{i}"] = ticket
    # Let the notices to the customers go out before measuring.
    await asyncio.sleep(2.0)
    return by_customer


async def relay_once(
    session: aiohttp.ClientSession,
    deskmate: Deskmate,
    slack: FakeSlack,
    channel: str,
    ticket: Message,
    n: int,
) -> tuple[float, float]:
    text = f"Relay number {n}: your order is on its way."
    expected = f"{SIGNATURE}: {text}"
    started = time.monotonic()
    assert await deliver(session, deskmate.events_url, SECRET, agent_says(text, ticket)) == 200
    accepted = time.monotonic()

    def arrived() -> float | None:
        for call in slack.calls_of("chat.postMessage"):
            if call.args.get("channel") == channel and call.args.get("text") == expected:
                return call.at
        return None

    await slack.wait_for(lambda: arrived() is not None, within=60)
    at = arrived()
    assert at is not None
    return at - accepted, at - started


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> None:
    if args.postgres:
        name = f"deskmate_bench_{os.getpid()}"
        await admin(f'CREATE DATABASE "{name}"')
        try:
            await measure(args, f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}")
        finally:
            await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        await measure(args, args.database_url)


async def measure(args: argparse.Namespace, database_url: str) -> None:
    slack = await FakeSlack().start()
    llm = FakeOpenAI()
    await llm.start()
    with tempfile.TemporaryDirectory() as tmp:
        database = database_url or f"sqlite:///{Path(tmp) / 'deskmate.db'}"
        env = handoff_env(database, slack, llm)
        # Slack's own pace (about one message a second per channel), which the
        # fake enforces; the tests' faster setting would meet its 429s.
        env["SLACK_EDIT_INTERVAL"] = "1.2"
        deskmate = await Deskmate.start(Path(tmp), env)
        try:
            async with aiohttp.ClientSession() as session:
                by_customer = await open_tickets(session, deskmate, slack, args.customers)
                pairs = list(by_customer.items())
                load_before = os.getloadavg()
                latencies: list[float] = []
                trips: list[float] = []
                counter = iter(range(args.relays))

                async def agent(lane: int) -> None:
                    # Each lane keeps to its own tickets: one conversation's
                    # relays are sequential, as an agent's would be.
                    mine = pairs[lane :: args.concurrency] or pairs
                    for k, n in enumerate(counter):
                        channel, ticket = mine[k % len(mine)]
                        latency, trip = await relay_once(
                            session, deskmate, slack, channel, ticket, n
                        )
                        latencies.append(latency)
                        trips.append(trip)

                wall = time.monotonic()
                await asyncio.gather(*(agent(lane) for lane in range(args.concurrency)))
                wall = time.monotonic() - wall
                load_after = os.getloadavg()
        finally:
            await deskmate.stop()
            await slack.stop()
            await llm.stop()

    def ms(value: float) -> str:
        return f"{value * 1000:.0f} ms"

    print(
        f"{len(latencies)} relays over {args.customers} tickets, concurrency "
        f"{args.concurrency}, {database.split(':', 1)[0]}; {wall:.1f} s wall "
        f"({len(latencies) / wall:.1f} relays/s)"
    )
    print(
        f"accepted -> delivered: p50 {ms(statistics.median(latencies))}, "
        f"p95 {ms(percentile(latencies, 0.95))}, max {ms(max(latencies))}"
    )
    print(
        f"round trip (POST -> delivered): p50 {ms(statistics.median(trips))}, "
        f"p95 {ms(percentile(trips, 0.95))}"
    )
    print(
        f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
        f"{os.cpu_count()} CPUs; model requests {len(llm.requests)} (ticket summaries only)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--relays", type=int, default=300)
    parser.add_argument("--customers", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument(
        "--database-url", default="", help="an empty database (default: a temporary SQLite file)"
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="create and drop a database on DESKMATE_TEST_POSTGRES",
    )
    asyncio.run(main(parser.parse_args()))
