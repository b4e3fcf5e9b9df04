"""The terminal chat against an in-memory Conversations: no manager, no model."""

from __future__ import annotations

import io
from collections.abc import Sequence

from adapters.console import PROMPT, ConsoleChat
from bot.types import Accepted, ConversationRef, Inbound, MenuEntry, Render, Reply, ReplyKind
from storage.repository import StoredInbound


class Echo:
    def __init__(self) -> None:
        self.accepted: list[Inbound] = []

    async def accept(self, inbound: Inbound) -> Accepted:
        self.accepted.append(inbound)
        n = len(self.accepted)
        return Accepted(
            inbound=inbound,
            inbound_id=n,
            duplicate=False,
            stored=StoredInbound(inbound_id=n, conversation_id=1, message_id=None, status="new"),
            text=inbound.text,
            truncated=False,
            command=None,
        )

    async def process(self, accepted: Accepted, render: Render) -> Reply:
        reply = Reply(ReplyKind.ANSWER, text=f"echo: {accepted.text}")
        await render(reply)
        return reply

    async def pending(self, platform: str) -> list[Accepted]:
        return []

    async def set_active(self, ref: ConversationRef, active: bool) -> None: ...

    async def move_conversation(self, old: ConversationRef, new: ConversationRef) -> None: ...

    def menu(self) -> Sequence[MenuEntry]:
        return []


async def test_each_line_is_stored_then_answered_until_quit() -> None:
    out = io.StringIO()
    chat = ConsoleChat(
        stdin=io.StringIO("hello\n\n  \nhow are you?\n/quit\nnot read\n"), stdout=out
    )
    conversations = Echo()
    await chat.run(conversations)
    assert [i.text for i in conversations.accepted] == ["hello", "how are you?"]
    assert len({i.event_id for i in conversations.accepted}) == 2
    assert f"{PROMPT}deskmate> echo: hello\n" in out.getvalue()
    assert "deskmate> echo: how are you?\n" in out.getvalue()
