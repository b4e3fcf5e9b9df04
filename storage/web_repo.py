"""What the web chat keeps in the database: messages waiting for a visitor,
and the key its visitor identities are signed with when none is configured.

Both live here rather than in one process's memory so that any number of
workers, and a restarted one, see the same: a relay queued by one worker is
taken by whichever worker the visitor's page polls next, once.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, delete, select

from storage.db import utcnow
from storage.models import server_keys, web_messages
from storage.sql import Store

# A visitor who never comes back does not keep their messages forever.
KEEP_FOR = timedelta(days=30)
# The most messages waiting for one visitor; older ones go first.
MAX_WAITING = 100
VISITOR_KEY = "web_visitors"
_WEB = "web:"
_WIDGET = "widget:"
# A widget person's id (a visitor's, or a signed-in user's digest): no LIKE wildcards.
_PERSON = re.compile(r"^[0-9a-z]{16,40}$")


@dataclass(frozen=True, slots=True)
class WaitingMessage:
    """One message for a visitor's page: ``chat`` is the conversation it
    belongs to, ``buttons`` the (label, command) pairs shown under it."""

    id: int
    chat: str
    text: str
    buttons: tuple[tuple[str, str], ...]


class WebRepository(Store):
    """The web chat's waiting messages and its generated signing key."""

    async def signing_key(self) -> str:
        """The key this deployment signs visitor identities with: made once by
        whichever process asks first, the same for every process after."""

        def op(conn: Connection) -> str:
            conn.execute(
                self._insert(server_keys)
                .values(name=VISITOR_KEY, value=secrets.token_urlsafe(32), created_at=utcnow())
                .on_conflict_do_nothing(index_elements=["name"])
            )
            value = conn.execute(
                select(server_keys.c.value).where(server_keys.c.name == VISITOR_KEY)
            ).scalar_one()
            return str(value)

        return await self._run("read the web chat's signing key", op)

    async def put(
        self, *, visitor: str, chat: str, text: str, buttons: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Keep ``text`` for ``visitor``'s page until it polls; beyond
        ``MAX_WAITING`` for them, and after ``KEEP_FOR``, the oldest go."""
        now = utcnow()

        def op(conn: Connection) -> None:
            conn.execute(
                web_messages.insert().values(
                    visitor=visitor,
                    chat=chat,
                    text=text,
                    buttons=[[label, command] for label, command in buttons],
                    created_at=now,
                )
            )
            newest = (
                select(web_messages.c.id)
                .where(web_messages.c.visitor == visitor)
                .order_by(web_messages.c.id.desc())
                .limit(MAX_WAITING)
            )
            conn.execute(
                delete(web_messages).where(
                    web_messages.c.visitor == visitor,
                    web_messages.c.id.not_in(newest.scalar_subquery()),
                )
            )
            conn.execute(delete(web_messages).where(web_messages.c.created_at < now - KEEP_FOR))

        await self._run("keep a message for a web visitor", op)

    async def take(self, visitor: str) -> list[WaitingMessage]:
        """The messages waiting for ``visitor``, oldest first, removed as they
        are read: two polls at once, on two workers, never both get one."""

        def op(conn: Connection) -> list[WaitingMessage]:
            # Pages poll every few seconds, mostly for nothing: a read settles that.
            mine = web_messages.c.visitor == visitor
            if conn.execute(select(web_messages.c.id).where(mine).limit(1)).first() is None:
                return []
            rows = conn.execute(
                delete(web_messages)
                .where(mine)
                .returning(
                    web_messages.c.id,
                    web_messages.c.chat,
                    web_messages.c.text,
                    web_messages.c.buttons,
                )
            ).all()
            return sorted((_waiting(row) for row in rows), key=lambda m: m.id)

        return await self._run("read the messages waiting for a web visitor", op)


def forget_web_messages(conn: Connection, platform_user: str) -> int:
    """Remove what waits for ``platform_user`` when they are a web visitor
    (``web:<visitor>``) or a widget visitor (``widget:<person>``, whose
    messages wait under ``<site>.<person>`` on every site), inside the
    caller's transaction; returns how many."""
    if platform_user.startswith(_WEB):
        visitor = platform_user.removeprefix(_WEB)
        mine = web_messages.c.visitor == visitor
    elif platform_user.startswith(_WIDGET) and _PERSON.match(platform_user.removeprefix(_WIDGET)):
        mine = web_messages.c.visitor.like("%." + platform_user.removeprefix(_WIDGET))
    else:
        return 0
    return conn.execute(delete(web_messages).where(mine)).rowcount


def _waiting(row: Any) -> WaitingMessage:
    buttons = tuple(
        (str(pair[0]), str(pair[1]))
        for pair in (row.buttons or [])
        if isinstance(pair, list | tuple) and len(pair) == 2
    )
    return WaitingMessage(id=int(row.id), chat=row.chat, text=row.text, buttons=buttons)
