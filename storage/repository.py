"""The repository the conversation manager calls: the inbox and its claims
(``storage.inbox_repo``) over conversations and their history
(``storage.conversations_repo``).

The names the bot and adapters import from here are defined in those modules.
"""

from __future__ import annotations

from storage.addresses import ConversationAddress
from storage.conversations_repo import ForgetResult, HistoryItem, Stats
from storage.inbox_repo import (
    AcceptStatus,
    InboundEvent,
    InboxRepository,
    MessageKind,
    PendingInbound,
    StoredInbound,
)

__all__ = [
    "AcceptStatus",
    "ConversationAddress",
    "ForgetResult",
    "HistoryItem",
    "InboundEvent",
    "MessageKind",
    "PendingInbound",
    "Repository",
    "Stats",
    "StoredInbound",
]


class Repository(InboxRepository):
    """Everything the conversation manager stores, as one object: the inbox,
    claims and leases (``InboxRepository``) and conversations, history,
    forgetting and usage figures (``ConversationRepository``, which it
    extends). Every public coroutine but ``aclose`` is one transaction."""
