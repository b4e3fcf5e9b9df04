"""Small builders the test packages share."""

from __future__ import annotations

import itertools

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
        self.replies.append("".join(chunks))
