"""What every repository shares: one transaction per call, the dialect's
``INSERT ... ON CONFLICT``, conversation addresses in SQL, and percentiles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sqlalchemy import Connection, Select, and_, select
from sqlalchemy.dialects import postgresql, sqlite

from storage.addresses import ConversationAddress
from storage.db import Database
from storage.models import conversations

T = TypeVar("T")

# The columns that make a conversation's address, in ``ConversationAddress`` order.
ADDRESS_COLUMNS = (
    conversations.c.platform,
    conversations.c.tenant,
    conversations.c.chat,
    conversations.c.thread,
)


class Store:
    """The base of every repository: the database and how a call runs on it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.dialect = db.dialect

    async def _run(self, what: str, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one transaction; a failure is ``StorageError``
        ("could not ``what``: cause")."""
        return await self.db.run(fn, what=what)

    def _insert(self, table: Any) -> Any:
        """An ``INSERT`` that supports ``on_conflict_do_*`` on this dialect."""
        return (postgresql if self.dialect == "postgresql" else sqlite).insert(table)


def address_of(row: Any) -> ConversationAddress:
    """The address in a row that has the ``ADDRESS_COLUMNS`` by name."""
    return ConversationAddress(row.platform, row.tenant, row.chat, row.thread)


def at_address(ref: ConversationAddress) -> Any:
    """The condition that picks the ``conversations`` row at ``ref``."""
    return and_(
        conversations.c.platform == ref.platform,
        conversations.c.tenant == ref.tenant,
        conversations.c.chat == ref.chat,
        conversations.c.thread == ref.thread,
    )


def select_address(conversation_id: Any) -> Select[Any]:
    """The address of conversation ``conversation_id`` (a value or a column)."""
    return select(*ADDRESS_COLUMNS).where(conversations.c.id == conversation_id)


def nearest_rank(sorted_values: Iterable[float], pct: float) -> float | None:
    """The nearest-rank ``pct`` percentile of values given in ascending order
    (None when there are none): always one of the observed values."""
    values = list(sorted_values)
    if not values:
        return None
    rank = max(1, -(-len(values) * pct // 100))
    return float(values[int(rank) - 1])
