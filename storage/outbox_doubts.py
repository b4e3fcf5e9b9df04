"""Outbox rows whose delivery could not be confirmed.

A row whose send may have reached its chat all the same is set aside with
``status`` "unconfirmed" instead of being retried, and a message for the
people who can tell (the ticket's agents) is queued in the same transaction,
so the row is never left both unsent and unexplained. A person may then queue
it again once (``resend``), which is a row of the same ticket only from the
support space that ticket lives in.

``storage.handoff_repo`` runs these inside its own transactions. A warning
quotes the row it is about, so it is emptied with that row when its author's
words are erased (``forget_warnings``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, case, or_, select, update

from storage.addresses import ConversationAddress
from storage.db import utcnow
from storage.models import outbox, tickets

UNCONFIRMED = "unconfirmed"


@dataclass(frozen=True, slots=True)
class Queued:
    """A message to queue in the outbox, as ``HandoffRepository.enqueue`` takes it."""

    key: str
    address: ConversationAddress
    text: str
    kind: str
    ticket_id: int | None = None
    buttons: Sequence[tuple[str, str]] = ()


class Resent(StrEnum):
    """What asking to send an unconfirmed row again did."""

    QUEUED = "queued"
    UNKNOWN = "unknown"  # no such row among the tickets of this support space
    SETTLED = "settled"  # it is not unconfirmed (sent again already, or delivered)
    ERASED = "erased"  # its words were removed at the customer's request


def mark_unconfirmed(
    conn: Connection, insert: Callable[[Any], Any], item_id: int, error: str, tell: Queued | None
) -> bool:
    """Set the row aside unsent and queue ``tell``; whether ``tell`` was new.
    ``insert`` is the dialect's ``INSERT`` (``Store._insert``)."""
    now = utcnow()
    conn.execute(
        update(outbox)
        .where(outbox.c.id == item_id)
        .values(
            status=UNCONFIRMED,
            attempts=outbox.c.attempts + 1,
            error=error[:2000],
            claimed_until=None,
        )
    )
    if tell is None:
        return False
    stmt = (
        insert(outbox)
        .values(
            key=tell.key[:200],
            kind=tell.kind,
            ticket_id=tell.ticket_id,
            platform=tell.address.platform,
            tenant=tell.address.tenant,
            chat=tell.address.chat,
            thread=tell.address.thread,
            text=tell.text,
            buttons=[list(b) for b in tell.buttons] or None,
            status="pending",
            next_attempt_at=now,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["key"])
    )
    return bool(conn.execute(stmt).rowcount)


def resend(conn: Connection, item_id: int, space_chat: str) -> Resent:
    """Queue the unconfirmed row ``item_id`` again, when it belongs to a
    ticket of the support space ``space_chat``; only one of two people asking
    at once queues it."""
    row = conn.execute(
        select(outbox.c.status, outbox.c.text)
        .join(tickets, tickets.c.id == outbox.c.ticket_id)
        .where(outbox.c.id == item_id, tickets.c.space_chat == space_chat)
    ).first()
    if row is None:
        return Resent.UNKNOWN
    if not row.text:
        return Resent.ERASED
    moved = conn.execute(
        update(outbox)
        .where(outbox.c.id == item_id, outbox.c.status == UNCONFIRMED)
        .values(status="pending", next_attempt_at=utcnow(), claimed_until=None, error=None)
    ).rowcount
    return Resent.QUEUED if moved else Resent.SETTLED


def warning_key(item_id: int, attempt: int) -> str:
    """The key of the warning about the ``attempt``-th unconfirmed send of row ``item_id``."""
    return f"unconfirmed:{item_id}:{attempt}"


def forget_warnings(conn: Connection, item_ids: Sequence[int]) -> None:
    """Empty the messages to agents that quote rows ``item_ids`` (warnings that a
    send was unconfirmed, or failed for good); one still waiting is not sent."""
    if not item_ids:
        return
    about = [outbox.c.key.like(f"unconfirmed:{i}:%") for i in item_ids]
    about += [outbox.c.key == f"undelivered:{i}" for i in item_ids]
    conn.execute(
        update(outbox)
        .where(or_(*about))
        .values(
            text="",
            status=case((outbox.c.status == "pending", "failed"), else_=outbox.c.status),
            error=case((outbox.c.status == "pending", "forgotten"), else_=outbox.c.error),
        )
    )
