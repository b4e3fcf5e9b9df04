"""The statements a message runs through on its way in and out, built once.

On SQLite they run straight on the driver's cursor (see ``Statements``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, or_, select, update

from storage.models import conversations, inbound_events, messages

# Events that still need an answer: waiting their turn, claimed, or failed
# with a retry ahead of them.
UNSETTLED = or_(
    inbound_events.c.status == "processing",
    inbound_events.c.status == "queued",
    and_(inbound_events.c.status == "failed", inbound_events.c.retry_at.is_not(None)),
)


class Statements:
    """Hot-path statements, built once.

    On SQLite they run straight on the driver's cursor: SQLAlchemy's execution
    machinery costs about 0.1 ms a statement, six times what SQLite takes to
    run one of these, and a message needs five. The SQL itself is still
    compiled from the Core statements below, so there is one definition.
    """

    def __init__(self, dialect: Any, insert: Any) -> None:
        self.raw = dialect.name == "sqlite"
        self._dialect = dialect
        self._compiled: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.insert_message = messages.insert().returning(messages.c.id)
        self.insert_event = (
            insert(inbound_events)
            .on_conflict_do_nothing(index_elements=["platform", "event_id"])
            .returning(inbound_events.c.id)
        )
        self.mark_answered = (
            update(inbound_events)
            .where(
                inbound_events.c.id == bindparam("inbound_id"),
                inbound_events.c.status != "answered",
            )
            .values(
                status="answered",
                answered_at=bindparam("now"),
                error=None,
                retry_at=None,
                claimed_by=None,
            )
            .returning(inbound_events.c.id)
        )
        # A cached conversation id is still the row at its address (a purge
        # may have deleted it, and SQLite may give its id to a new row); on
        # PostgreSQL the row is also locked until the transaction ends.
        self.conversation_at = select(conversations.c.id).where(
            conversations.c.id == bindparam("id"),
            conversations.c.platform == bindparam("platform"),
            conversations.c.tenant == bindparam("tenant"),
            conversations.c.chat == bindparam("chat"),
            conversations.c.thread == bindparam("thread"),
        )
        if not self.raw:
            self.conversation_at = self.conversation_at.with_for_update()
        self.lock_conversation = (
            select(conversations.c.id)
            .where(conversations.c.id == bindparam("id"))
            .with_for_update()
        )
        self.unsettled = select(
            inbound_events.c.id, inbound_events.c.status, inbound_events.c.claimed_by
        ).where(inbound_events.c.conversation_id == bindparam("conversation_id"), UNSETTLED)
        position = func.coalesce(messages.c.reply_to, messages.c.id)
        self.history_all = (
            select(messages.c.role, messages.c.text, messages.c.user_id)
            .where(
                messages.c.conversation_id == bindparam("conversation_id"),
                messages.c.kind == "chat",
            )
            .order_by(position.desc(), messages.c.id.desc())
            .limit(bindparam("limit"))
        )
        # Everything before the question, and the question itself, but not an
        # earlier answer to it (a retried event).
        self.history = self.history_all.where(
            or_(position < bindparam("upto"), messages.c.id == bindparam("upto"))
        )

    def rows(self, conn: Connection, stmt: Any, params: dict[str, Any]) -> list[Any]:
        if not self.raw:
            result = conn.execute(stmt, params)
            return list(result.all()) if result.returns_rows else []
        key = (id(stmt), tuple(params))
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = stmt.compile(dialect=self._dialect, column_keys=list(params))
            self._compiled[key] = compiled
        values = compiled.construct_params(params)
        args = tuple(_sqlite_value(values[name]) for name in compiled.positiontup)
        cursor = conn.connection.driver_connection.execute(compiled.string, args)  # type: ignore[union-attr]
        try:
            return cursor.fetchall()
        finally:
            cursor.close()


def _sqlite_value(value: Any) -> Any:
    # What SQLAlchemy's SQLite types would store, so Core reads them back.
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dict):
        return json.dumps(value)
    return value
