"""The website widget under load: 200 visitors on one site, 10 messages each,
through the widget's HTTP API.

A child process serves the widget (``WidgetChat`` on the bot's HTTP server,
the real conversation manager, the fake model streaming its echo word by
word, a SQLite file or ``--database-url``) with the site's limits raised for
the run; this process plays the visitors' browsers: each gets its identity
from ``/widget/api/config`` and sends its messages one after the other, all
visitors at once, reading each answer's server-sent events to the end.

    python bench/widget_load.py                       # 200 visitors x 10 messages, SQLite
    python bench/widget_load.py --database-url postgresql://postgres@127.0.0.1/bench

Checked: every answer is the echo of its own message, no request is refused,
and the database holds exactly one question and one answer per message
(nothing lost, nothing twice). Reported: time to first byte (the first
``text`` event) and to the end of the answer, p50/p95/p99, and messages/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ORIGIN = "http://bench.example"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def serve(database_url: str, chunk_delay: float) -> None:
    """The child: the widget on a free port; prints the site and port, runs until stdin closes."""
    from adapters.web import HttpServer
    from adapters.widget import WidgetChat
    from bench.support import echo_manager
    from bot.app import create_widget_sites
    from bot.settings import Settings
    from llm.fake import FakeBackend
    from storage.web_repo import WebRepository

    manager, db = await echo_manager(database_url, FakeBackend(chunk_delay=chunk_delay))
    manager.start()
    sites = create_widget_sites(db, Settings())
    site = await sites.add([ORIGIN], actor="bench")
    http = HttpServer(host="127.0.0.1", port=0)
    widget = WidgetChat(
        http=http,
        sites=sites,
        store=WebRepository(db),
        # Raised for the run: one address plays every visitor.
        visitor_rate=10_000,
        site_rate=10_000_000,
        address_rate=10_000_000,
    )
    await http.start()
    await widget.start(manager)
    http.ready = True
    print(json.dumps({"site": site.key, "port": http.port}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await widget.stop()
    await http.stop()
    await manager.aclose()
    await db.dispose()


class Visitor:
    def __init__(self, number: int) -> None:
        self.number = number
        self.token = ""
        self.ttfb: list[float] = []
        self.total: list[float] = []
        self.wrong: list[str] = []
        self.refused = 0


async def visit(
    session: aiohttp.ClientSession, base: str, site: str, visitor: Visitor, messages: int
) -> None:
    headers = {"Origin": ORIGIN}
    async with session.get(f"{base}/widget/api/config?site={site}", headers=headers) as r:
        visitor.token = (await r.json())["visitor"]
    headers["X-Deskmate-Visitor"] = visitor.token
    for n in range(messages):
        text = f"visitor {visitor.number} message {n}"
        body = {"text": text, "message_id": uuid.uuid4().hex}
        start = time.perf_counter()
        first = None
        async with session.post(
            f"{base}/widget/api/chat?site={site}", json=body, headers=headers
        ) as response:
            if response.status != 200:
                visitor.refused += 1
                await response.read()
                continue
            raw = b""
            async for chunk in response.content.iter_any():
                if first is None and b"event: text" in raw + chunk:
                    first = time.perf_counter() - start
                raw += chunk
        visitor.total.append(time.perf_counter() - start)
        visitor.ttfb.append(first if first is not None else visitor.total[-1])
        texts = [
            json.loads(block.split("\ndata: ", 1)[1])["text"]
            for block in raw.decode().strip().split("\n\n")
            if block.startswith("event: text")
        ]
        if not texts or texts[-1] != f"echo: {text}":
            visitor.wrong.append(f"{text!r} -> {texts[-1:]!r}")


async def stored_counts(database_url: str) -> dict[str, tuple[int, int]]:
    """Per widget conversation: (questions, answers) stored."""
    from sqlalchemy import func, select

    from storage.db import Database
    from storage.models import conversations, messages

    db = Database(database_url)
    try:

        def op(conn: object) -> dict[str, tuple[int, int]]:
            rows = conn.execute(  # type: ignore[attr-defined]
                select(conversations.c.chat, messages.c.role, func.count())
                .join(messages, messages.c.conversation_id == conversations.c.id)
                .where(conversations.c.platform == "widget")
                .group_by(conversations.c.chat, messages.c.role)
            ).all()
            found: dict[str, list[int]] = {}
            for chat, role, count in rows:
                found.setdefault(chat, [0, 0])[0 if role == "user" else 1] += count
            return {chat: (q, a) for chat, (q, a) in found.items()}

        return await db.run(op, what="count the stored messages")
    finally:
        await db.dispose()


async def drive(args: argparse.Namespace, database_url: str) -> int:
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", "--database-url", database_url,
        "--chunk-delay", str(args.chunk_delay),
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert child.stdout is not None and child.stdin is not None
    ready = json.loads((await child.stdout.readline()).decode())
    base, site = f"http://127.0.0.1:{ready['port']}", ready["site"]
    visitors = [Visitor(i) for i in range(args.visitors)]
    connector = aiohttp.TCPConnector(limit=args.visitors)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(visit(session, base, site, v, args.messages) for v in visitors))
    elapsed = time.perf_counter() - started
    child.stdin.close()
    await child.wait()

    sent = args.visitors * args.messages
    ttfb = [t for v in visitors for t in v.ttfb]
    total = [t for v in visitors for t in v.total]
    wrong = [w for v in visitors for w in v.wrong]
    refused = sum(v.refused for v in visitors)
    counts = await stored_counts(database_url)
    expected = {f"{site}.{v.token.partition('.')[0]}": (args.messages, args.messages)
                for v in visitors}  # fmt: skip
    lost_or_twice = {c: counts.get(c) for c in expected if counts.get(c) != expected[c]}
    print(f"{args.visitors} visitors x {args.messages} messages on one site: {sent} messages")
    print(f"answered {len(total)}, refused {refused}, wrong answers {len(wrong)}")
    print(f"stored: {len(counts)} conversations; not exactly one question and one answer per "
          f"message: {len(lost_or_twice)}")  # fmt: skip
    print(f"wall {elapsed:.1f} s, {len(total) / elapsed:.0f} messages/s")
    for name, values in (("time to first byte", ttfb), ("whole answer", total)):
        print(
            f"{name}: p50 {percentile(values, 0.5) * 1000:.0f} ms, "
            f"p95 {percentile(values, 0.95) * 1000:.0f} ms, "
            f"p99 {percentile(values, 0.99) * 1000:.0f} ms"
        )
    for line in wrong[:5]:
        print("  wrong:", line)
    for chat, found in list(lost_or_twice.items())[:5]:
        print(f"  {chat}: {found}")
    ok = not wrong and not refused and not lost_or_twice and len(total) == sent
    print("OK: nothing lost, nothing twice" if ok else "FAILED")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visitors", type=int, default=200)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--database-url", default="")
    parser.add_argument(
        "--chunk-delay", type=float, default=0.005, help="seconds between the model's words"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.database_url, args.chunk_delay))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'widget-load.db'}"
        return asyncio.run(drive(args, url))


if __name__ == "__main__":
    sys.exit(main())
