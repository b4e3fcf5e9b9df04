"""Where a conversation lives: the one address type of storage and the bot.

Kept free of SQL so that the bot's platform-neutral types can use it without
loading the database layer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConversationAddress:
    """Where a conversation lives on its platform (a row of ``conversations``).

    ``tenant`` separates workspaces / bots (Slack team id, Telegram bot id);
    ``thread`` is a Slack thread ts or a Telegram forum topic id ("" when none).
    """

    platform: str
    tenant: str
    chat: str
    thread: str = ""

    @property
    def key(self) -> str:
        """The conversation's name in the knowledge base's settings and answer log."""
        return f"{self.platform}:{self.tenant}:{self.chat}:{self.thread}"
