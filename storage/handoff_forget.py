"""What tickets keep of a person who is not the ticket's customer: a member of
a group whose ticket shows their messages, or an agent whose relays went out.

``storage.handoff_repo``'s ``forget`` erases the tickets of their own
conversations; this module erases their words from everyone else's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, case, select, update

from storage.models import inbound_events, outbox, tickets
from storage.outbox_doubts import forget_warnings

T = TypeVar("T")
# Ids per IN (...) list: well under SQLite's and asyncpg's bound-parameter limits.
_CHUNK = 500
# What a queued ticket post says once the words it quoted are gone.
_POST_REMOVED = "Ticket #{id} (details removed at a participant's request)"


def forget_in_others_tickets(conn: Connection, platform_user: str) -> int:
    """Remove ``platform_user``'s words from tickets that are not theirs: the
    turns a ticket shows, its case summary (written from those turns), the
    ticket post quoting them, and the relays of their messages (to a ticket,
    or to a customer when they answered as an agent). Needs their messages
    still stored: runs before their events are emptied, inside the caller's
    transaction. Returns the tickets changed."""
    said = conn.execute(
        select(inbound_events.c.id, inbound_events.c.conversation_id, inbound_events.c.text).where(
            inbound_events.c.user_id == platform_user
        )
    ).all()
    if not said:
        return 0
    forget_relays(conn, [f"relay:{row.id}" for row in said])
    # A ticket shows each turn cut at 500 characters.
    texts = {row.text[:500] for row in said if row.text}
    conversation_ids = sorted({row.conversation_id for row in said})
    changed = 0
    for chunk in _chunks(conversation_ids):
        found = conn.execute(
            select(tickets.c.id, tickets.c.details, tickets.c.summary).where(
                tickets.c.conversation_id.in_(chunk), tickets.c.customer != platform_user
            )
        ).all()
        for ticket in found:
            changed += _forget_in_ticket(conn, ticket, texts)
    return changed


def _forget_in_ticket(conn: Connection, ticket: Any, texts: set[str]) -> int:
    details = dict(ticket.details or {})
    turns = list(details.get("turns") or [])
    kept = _without(turns, texts)
    summary = ticket.summary or ""
    # The summary was written from the turns; quoting them or not, it goes with them.
    if kept == turns and not any(t in summary for t in texts):
        return 0
    details["turns"] = kept
    conn.execute(
        update(tickets).where(tickets.c.id == ticket.id).values(details=details, summary="")
    )
    posts = conn.execute(
        select(outbox.c.id, outbox.c.text).where(
            outbox.c.ticket_id == ticket.id, outbox.c.kind == "ticket"
        )
    ).all()
    for post in posts:
        if any(t in post.text for t in texts) or (summary and summary in post.text):
            conn.execute(
                update(outbox)
                .where(outbox.c.id == post.id)
                .values(text=_POST_REMOVED.format(id=ticket.id))
            )
    return 1


def _without(turns: list[dict[str, Any]], texts: set[str]) -> list[dict[str, Any]]:
    """The turns but the person's, and the answer right after each of theirs
    (history puts an answer after its question; /forget removes both)."""
    kept: list[dict[str, Any]] = []
    dropped = False
    for turn in turns:
        if turn.get("role") == "user":
            dropped = turn.get("text") in texts
        elif turn.get("role") != "assistant":
            dropped = False
        if not dropped:
            kept.append(turn)
    return kept


def forget_relays(conn: Connection, keys: Sequence[str]) -> None:
    """Empty the outbox rows written under ``keys``, and the warnings to agents
    that quote them; one still waiting is not sent."""
    for chunk in _chunks(keys):
        ids = list(conn.execute(select(outbox.c.id).where(outbox.c.key.in_(chunk))).scalars())
        forget_warnings(conn, ids)
        conn.execute(
            update(outbox)
            .where(outbox.c.key.in_(chunk))
            .values(
                text="",
                status=case((outbox.c.status == "pending", "failed"), else_=outbox.c.status),
                error=case((outbox.c.status == "pending", "forgotten"), else_=outbox.c.error),
            )
        )


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
