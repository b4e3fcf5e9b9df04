"""The terminal chat against an in-memory Conversations: no manager, no model."""

from __future__ import annotations

import io

from adapters.console import PROMPT, ConsoleChat
from tests.adapters.conversations import Echo


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
