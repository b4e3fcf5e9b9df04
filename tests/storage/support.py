"""Builders for tests that call the repository directly."""

from __future__ import annotations

import itertools

from storage.repository import ConversationAddress, InboundEvent

_ids = itertools.count(1)


def make_event(
    text: str,
    *,
    chat: str = "c1",
    user: str = "u1",
    event_id: str | None = None,
    platform: str = "test",
    tenant: str = "t1",
    thread: str = "",
) -> InboundEvent:
    return InboundEvent(
        conversation=ConversationAddress(platform, tenant, chat, thread),
        event_id=event_id or f"ev{next(_ids)}",
        user_id=f"{platform}:{user}",
        text=text,
        user_name=f"name-{user}",
    )
