"""An in-memory ``bot.types.Conversations`` for adapter tests: no manager, no model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from bot.types import (
    Accepted,
    ConversationRef,
    Inbound,
    MenuEntry,
    Render,
    Reply,
    ReplyKind,
    Retraction,
)
from storage.repository import StoredInbound


class Echo:
    """Stores nothing and answers ``echo: <text>`` at once."""

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

    async def pending_of_tenant(self, platform: str, tenant: str | None) -> list[Accepted]:
        return []

    async def take_lease(self, name: str, *, purpose: str, wait: float | None = None) -> None:
        """Always granted: one test runs one adapter, so there is no second
        consumer to keep out (tests/bot/test_reliability.py tests the real lease)."""

    async def set_active(self, ref: ConversationRef, active: bool) -> None: ...

    async def move_conversation(self, old: ConversationRef, new: ConversationRef) -> None: ...

    def menu(self, language: str | None = None) -> Sequence[MenuEntry]:
        return []

    def listens_to(self, ref: ConversationRef) -> bool:
        return False

    async def staff_language(self, ref: ConversationRef) -> str:
        return "en"


class TakesBack(Echo):
    """Answers ``sure: <text>``, then takes it back for ``Withheld.``."""

    async def process(self, accepted: Accepted, render: Render) -> Reply:
        async def chunks() -> AsyncIterator[str]:
            yield f"sure: {accepted.text}\n"
            yield "more"
            yield Retraction("Withheld.")

        reply = Reply(ReplyKind.ANSWER, chunks())
        await render(reply)
        return reply
