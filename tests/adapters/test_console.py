"""The terminal chat against an in-memory Conversations: no manager, no model."""

from __future__ import annotations

import io

from adapters.console import PROMPT, ConsoleChat
from tests.adapters.conversations import Echo, TakesBack


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


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_an_answer_taken_back_is_erased_from_a_terminal() -> None:
    out = Terminal()
    await ConsoleChat(stdin=io.StringIO("hi\n"), stdout=out).run(TakesBack())
    # Back to the start of the answer's first row (one row up), cleared below.
    assert "deskmate> sure: hi\nmore\r\x1b[1A\x1b[Jdeskmate> Withheld.\n" in out.getvalue()


async def test_an_answer_taken_back_in_a_pipe_is_followed_by_its_replacement() -> None:
    out = io.StringIO()
    await ConsoleChat(stdin=io.StringIO("hi\n"), stdout=out).run(TakesBack())
    assert "deskmate> sure: hi\nmore\ndeskmate> Withheld.\n" in out.getvalue()
