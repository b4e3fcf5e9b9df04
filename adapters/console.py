"""Terminal chat (``deskmate chat``): one conversation per terminal user."""

from __future__ import annotations

import asyncio
import getpass
import shutil
import sys
import uuid
from typing import TextIO

from bot.types import ConversationRef, Conversations, Inbound, Reply, Retraction

PROMPT = "you> "
ANSWER = "deskmate> "


class ConsoleChat:
    """Reads lines from ``stdin``, streams answers to ``stdout``."""

    name = "console"

    def __init__(self, *, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
        self.stdin = stdin
        self.stdout = stdout
        user = getpass.getuser()
        self.ref = ConversationRef("console", "local", user)
        self.user = user

    async def send(self, ref: ConversationRef, text: str) -> None:
        self.stdout.write(f"\n{text}\n")
        self.stdout.flush()

    async def run(self, conversations: Conversations) -> None:
        """Chat until end of input or ``/quit``."""
        self.stdout.write("Deskmate terminal chat. /help for commands, /quit or Ctrl-D to leave.\n")
        loop = asyncio.get_running_loop()
        while True:
            self.stdout.write(PROMPT)
            self.stdout.flush()
            line = await loop.run_in_executor(None, self.stdin.readline)
            if not line:
                self.stdout.write("\n")
                return
            text = line.rstrip("\n")
            if text.strip() in ("/quit", "/exit"):
                return
            if not text.strip():
                continue
            inbound = Inbound(ref=self.ref, user=self.user, text=text, event_id=uuid.uuid4().hex)
            accepted = await conversations.accept(inbound)
            await conversations.process(accepted, self._render)

    async def _render(self, reply: Reply) -> None:
        self.stdout.write(ANSWER)
        shown = ANSWER
        async for chunk in reply:
            if isinstance(chunk, Retraction):
                self._take_back(shown)
                self.stdout.write(ANSWER)
                shown = ANSWER
            self.stdout.write(chunk)
            self.stdout.flush()
            shown += chunk
        self.stdout.write("\n")
        self.stdout.flush()

    def _take_back(self, shown: str) -> None:
        """Erase ``shown`` (the answer so far) from a terminal; output that is
        not a terminal cannot be erased, so the text that replaces it starts
        on a line of its own."""
        if not self.stdout.isatty():
            self.stdout.write("\n")
            return
        width = max(shutil.get_terminal_size().columns, 1)
        # Rows above the cursor: each line, wrapped at the terminal's width.
        rows = sum(max(len(line) - 1, 0) // width + 1 for line in shown.split("\n")) - 1
        self.stdout.write("\r" + (f"\033[{rows}A" if rows else "") + "\033[J")
