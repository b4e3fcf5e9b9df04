"""Small builders the test packages share."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

from aiohttp import web

from bot.types import ConversationRef, Inbound, Reply

_ids = itertools.count(1)


def make_inbound(
    text: str,
    *,
    chat: str = "c1",
    user: str = "u1",
    event_id: str | None = None,
    platform: str = "test",
    tenant: str = "t1",
    thread: str = "",
) -> Inbound:
    return Inbound(
        ref=ConversationRef(platform, tenant, chat, thread),
        user=user,
        text=text,
        event_id=event_id or f"ev{next(_ids)}",
        user_name=f"name-{user}",
    )


class Rendered:
    """A render callback that records what a user would have seen."""

    def __init__(self) -> None:
        self.replies: list[str] = []
        self.chunks: list[list[str]] = []

    async def __call__(self, reply: Reply) -> None:
        chunks = [chunk async for chunk in reply]
        self.chunks.append(chunks)
        # The reply's final text: a retraction takes back the chunks before it.
        self.replies.append(reply.text)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve_local(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on 127.0.0.1 at a port the OS picks; returns the runner and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    return runner, int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]


# The labelled FAQ evaluation set (see tests/data/faq/README or bench/README.md).
FAQ_DATA = Path(__file__).resolve().parent / "data" / "faq"
