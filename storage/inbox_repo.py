"""The inbox: inbound events stored exactly once, claimed by one process at a
time, answered in order per conversation, retried after a failure; and the
named leases (one poller per bot, say) renewed with the claims.

Written against SQLAlchemy Core rather than the ORM: a message costs two short
transactions, and at hundreds of messages a second the ORM's unit of work is
most of the cost.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import Connection, and_, delete, false, or_, select, update

from storage.addresses import ConversationAddress
from storage.conversations_repo import ConversationRepository, HistoryItem
from storage.db import Database, utcnow
from storage.errors import StorageError
from storage.models import conversations, inbound_events, leases, messages, users
from storage.statements import UNSETTLED

log = logging.getLogger(__name__)

AcceptStatus = Literal["new", "queued", "retry", "duplicate"]
MessageKind = Literal["chat", "command"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """One platform event as stored: who sent what, where.

    ``user_id`` is the sender's deployment-wide id (e.g. ``telegram:123``);
    ``meta`` is the adapter's JSON-serialisable data for rendering the reply.
    """

    conversation: ConversationAddress
    event_id: str
    user_id: str
    text: str
    user_name: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredInbound:
    """Where an accepted inbound event lives, and whether it should be answered."""

    inbound_id: int
    conversation_id: int
    message_id: int | None
    status: AcceptStatus
    # The conversation's history up to this message, read in the same
    # transaction when the caller asked for it (saves a round trip).
    history: tuple[HistoryItem, ...] | None = None
    # The conversation's last detected language as of this message (its own
    # when the caller gave one), read in the same transaction; None: none
    # yet, or not read (``language_read``).
    language: str | None = None
    language_read: bool = False


@dataclass(slots=True)
class _Held:
    conversation_id: int
    since: float  # time.monotonic() when claimed
    # The answer has begun in this process (it holds the conversation's turn).
    started: bool = False


@dataclass(frozen=True, slots=True)
class PendingInbound:
    event: InboundEvent
    stored: StoredInbound


class InboxRepository(ConversationRepository):
    """Inbound events, their claims and answers, and named leases. Every public
    coroutine but ``aclose`` is one transaction; the plain methods keep this
    process's own record of the claims it holds.

    Inbound events are claimed by one process at a time. A claim is a lease:
    the process renews it (``renew_claims``, every few seconds) while it works
    on the event, and once it lapses the background sweep (``pending``) of
    any process takes the event over. ``single_process`` (SQLite) means no
    other process can hold a claim, so a claim by another process id is one
    left by a process that is gone.

    Events of one conversation are answered in order across processes: an
    event is claimed only when every older unsettled event of its
    conversation is in this process's hands; otherwise it is stored
    ``queued`` and the sweep claims it once its turn comes. Claims of one
    conversation are serialised on its ``conversations`` row (PostgreSQL).
    """

    def __init__(
        self,
        db: Database,
        *,
        claim_lease: float = 30.0,
        max_attempts: int = 3,
        retry_delays: Sequence[float] = (5.0, 30.0, 120.0),
        retry_window: float = 600.0,
        hold_limit: float = 3600.0,
        cache_size: int = 50_000,
    ) -> None:
        super().__init__(db, max_attempts=max_attempts, cache_size=cache_size)
        self.single_process = self.dialect == "sqlite"
        self.claim_lease = timedelta(seconds=claim_lease)
        self.retry_delays = tuple(retry_delays) or (0.0,)
        # A failure is retried only while the message is this fresh: a late
        # answer to a question the customer has likely moved on from is worse
        # than none.
        self.retry_window = timedelta(seconds=retry_window)
        self.hold_limit = hold_limit
        # Identifies this process's claims on inbound events.
        self.worker = uuid.uuid4().hex
        self.lease_holder = f"{self.worker[:12]} {socket.gethostname()[:32]} pid {os.getpid()}"
        # The events this process holds claims on (renewed by renew_claims).
        # Entries leave when the event is settled or its answer ends; anything
        # older than ``hold_limit`` is dropped, so the map cannot grow with
        # events that were claimed but never answered.
        self._held: dict[int, _Held] = {}
        self._unstarted = 0
        self._leases: set[str] = set()
        # After a database outage, stale claims are left alone for one lease:
        # their holders were cut off too, and must get the chance to renew or
        # record what they delivered meanwhile.
        self._takeover_after = 0.0

    # -- claims held by this process -------------------------------------------------

    def started(self, inbound_id: int) -> None:
        """Note that this process is answering the event now."""
        held = self._held.get(inbound_id)
        if held is not None and not held.started:
            held.started = True
            self._unstarted -= 1

    def claimed_before(self, conversation_id: int, inbound_id: int) -> bool:
        """Whether this process holds an older event of the conversation whose
        answer has not begun (claimed, and about to be handed to an adapter)."""
        if not self._unstarted:
            return False
        # A copy: on SQLite the map is also written from the database thread.
        return any(
            i < inbound_id and h.conversation_id == conversation_id and not h.started
            for i, h in list(self._held.items())
        )

    def release(self, inbound_id: int) -> None:
        """Stop renewing the claim (the answer ended, however it ended)."""
        held = self._held.pop(inbound_id, None)
        if held is not None and not held.started:
            self._unstarted -= 1

    @property
    def held(self) -> int:
        return len(self._held)

    def _hold(self, inbound_id: int, conversation_id: int, *, started: bool = False) -> None:
        self.release(inbound_id)
        self._held[inbound_id] = _Held(conversation_id, time.monotonic(), started)
        if not started:
            self._unstarted += 1

    def note_trouble(self) -> None:
        self._takeover_after = time.monotonic() + self.claim_lease.total_seconds()

    async def _run_watched(self, what: str, fn: Callable[[Connection], T]) -> T:
        """``_run`` for the claims' upkeep, whose failure means a database
        outage: stale claims are then left alone for one lease."""
        try:
            return await self._run(what, fn)
        except StorageError:
            self.note_trouble()
            raise

    async def renew_claims(self) -> int:
        """Renew the claims this process holds and its leases; returns how many
        claims were renewed."""
        cutoff = time.monotonic() - self.hold_limit
        for inbound_id in [i for i, h in list(self._held.items()) if h.since < cutoff]:
            log.warning("inbound %s held too long; its claim is left to lapse", inbound_id)
            self.release(inbound_id)
        ids = list(self._held)
        names = list(self._leases)
        if not ids and not names:
            return 0
        now = utcnow()

        def op(conn: Connection) -> int:
            renewed = 0
            if ids:
                result = conn.execute(
                    update(inbound_events)
                    .where(
                        inbound_events.c.id.in_(ids),
                        inbound_events.c.claimed_by == self.worker,
                        inbound_events.c.status == "processing",
                    )
                    .values(claimed_at=now)
                )
                renewed = result.rowcount or 0
            if names:
                conn.execute(
                    update(leases)
                    .where(leases.c.name.in_(names), leases.c.holder == self.lease_holder)
                    .values(expires_at=now + self.claim_lease)
                )
            return renewed

        return await self._run_watched("renew claims", op)

    # -- leases ----------------------------------------------------------------------

    async def take_lease(self, name: str) -> str | None:
        """Take the lease ``name`` (renewed with the claims until released).

        Returns None once it is this process's, else who holds it.
        """
        now = utcnow()

        def op(conn: Connection) -> str | None:
            taken = conn.execute(
                self._insert(leases)
                .values(name=name, holder=self.lease_holder, expires_at=now + self.claim_lease)
                .on_conflict_do_update(
                    index_elements=["name"],
                    set_={"holder": self.lease_holder, "expires_at": now + self.claim_lease},
                    where=or_(leases.c.expires_at < now, leases.c.holder == self.lease_holder),
                )
                .returning(leases.c.name)
            ).first()
            if taken is not None:
                return None
            holder = conn.execute(select(leases.c.holder).where(leases.c.name == name)).scalar()
            return str(holder or "?")

        holder = await self._run_watched("take a lease", op)
        if holder is None:
            self._leases.add(name)
        return holder

    async def release_leases(self) -> None:
        names = list(self._leases)
        if not names:
            return

        def op(conn: Connection) -> None:
            conn.execute(
                delete(leases).where(leases.c.name.in_(names), leases.c.holder == self.lease_holder)
            )

        await self._run_watched("release leases", op)
        self._leases.clear()

    # -- inbound ---------------------------------------------------------------

    async def accept(
        self,
        event: InboundEvent,
        *,
        kind: MessageKind,
        history_limit: int = 0,
        in_turn: bool = True,
        language: str | None = None,
    ) -> StoredInbound:
        """Store an inbound event and its message, or recognise a redelivery.

        ``new``: first delivery, stored and claimed by this process.
        ``queued``: first delivery, stored; an older event of the conversation
        is in another process's hands (or waiting to be retried), so this one
        waits its turn and the sweep claims it.
        ``retry``: stored before but never answered; claimed now.
        ``duplicate``: answered already, or being answered right now.
        With ``history_limit``, a new event comes back with its history.
        Without ``in_turn`` nothing is queued (for a caller that answers each
        message in the request that brought it, and has nobody sweeping).
        ``language``: the one detected in the message, kept as the
        conversation's; the stored event comes back with the conversation's.
        """

        claimed: list[int] = []

        def op(conn: Connection) -> StoredInbound:
            stored = self._accept(conn, event, kind, in_turn)
            if stored.status in ("new", "retry"):
                # Held from inside the transaction: an accept of the next
                # message, run right after this one, must see it as ours.
                self._hold(stored.inbound_id, stored.conversation_id)
                claimed.append(stored.inbound_id)
            if history_limit and stored.status == "new":
                history = self._history(
                    conn, stored.conversation_id, stored.message_id, history_limit
                )
                stored = replace(stored, history=tuple(history))
            if stored.status == "new":
                known = _language(conn, stored.conversation_id, language)
                stored = replace(stored, language=known, language_read=True)
            return stored

        try:
            stored = await self._run("store an inbound event", op)
        except BaseException:
            for inbound_id in claimed:
                self.release(inbound_id)
            raise
        # Cached only once committed: a rolled-back insert must not be remembered.
        self._remember(event.conversation, stored.conversation_id)
        self._known_users[event.user_id] = True
        return stored

    def _accept(
        self, conn: Connection, event: InboundEvent, kind: MessageKind, in_turn: bool
    ) -> StoredInbound:
        now = utcnow()
        conversation_id = self._conversation_id(conn, event.conversation, now)
        if self.dialect == "postgresql":
            # Serialises the claims of one conversation across workers: what
            # is read below cannot change until this transaction commits.
            conn.execute(self._sql.lock_conversation, {"id": conversation_id})
        queued = in_turn and self._waits_its_turn(conn, conversation_id)
        # The message goes in first so the event row can point at it; a
        # redelivery (rare) removes it again below.
        message_id = self._sql.rows(
            conn,
            self._sql.insert_message,
            {
                "conversation_id": conversation_id,
                "role": "user",
                "kind": kind,
                "user_id": event.user_id,
                "reply_to": None,
                "text": event.text,
                "prompt_tokens": None,
                "completion_tokens": None,
                "latency_ms": None,
                "created_at": now,
            },
        )[0][0]
        inserted = self._sql.rows(
            conn,
            self._sql.insert_event,
            {
                "platform": event.conversation.platform,
                "event_id": event.event_id,
                "conversation_id": conversation_id,
                "message_id": message_id,
                "user_id": event.user_id,
                "user_name": event.user_name,
                "text": event.text,
                "meta": dict(event.meta),
                "status": "queued" if queued else "processing",
                "attempts": 0 if queued else 1,
                "received_at": now,
                "claimed_at": None if queued else now,
                "claimed_by": None if queued else self.worker,
            },
        )
        if not inserted:
            conn.execute(delete(messages).where(messages.c.id == message_id))
            return self._redelivered(conn, event, now)
        if self._known_users.get(event.user_id) is None:
            conn.execute(
                self._insert(users)
                .values(platform_user=event.user_id, name=event.user_name, created_at=now)
                .on_conflict_do_nothing(index_elements=["platform_user"])
            )
        status: AcceptStatus = "queued" if queued else "new"
        return StoredInbound(inserted[0][0], conversation_id, message_id, status)

    def _waits_its_turn(self, conn: Connection, conversation_id: int) -> bool:
        """Whether a new event of the conversation must queue: some older one is
        unsettled and not in this process's hands (where the conversation's
        in-process turn keeps them in order)."""
        for inbound_id, status, claimed_by in self._sql.rows(
            conn, self._sql.unsettled, {"conversation_id": conversation_id}
        ):
            ours = status == "processing" and claimed_by == self.worker
            if not (ours and inbound_id in self._held):
                return True
        return False

    def _redelivered(self, conn: Connection, event: InboundEvent, now: datetime) -> StoredInbound:
        row = (
            conn.execute(
                select(
                    inbound_events.c.id,
                    inbound_events.c.conversation_id,
                    inbound_events.c.message_id,
                ).where(
                    inbound_events.c.platform == event.conversation.platform,
                    inbound_events.c.event_id == event.event_id,
                )
            )
        ).one()
        if self.dialect == "postgresql":
            conn.execute(self._sql.lock_conversation, {"id": row.conversation_id})
        claimed = self._claim_turns(conn, [row.conversation_id], now, only=row.id)
        status: AcceptStatus = "retry" if claimed else "duplicate"
        return StoredInbound(row.id, row.conversation_id, row.message_id, status)

    def _claim_turns(
        self, conn: Connection, conversation_ids: list[int], now: datetime, *, only: int | None
    ) -> list[int]:
        """Claim, in each conversation, the unsettled events whose turn it is,
        oldest first; give up those out of attempts. The caller holds the
        conversations' locks. With ``only``, claim that event or nothing (a
        redelivery: failed events are retried at once, not at ``retry_at``)."""
        takeover = time.monotonic() >= self._takeover_after
        cutoff = now - self.claim_lease
        rows = conn.execute(
            select(
                inbound_events.c.id,
                inbound_events.c.conversation_id,
                inbound_events.c.status,
                inbound_events.c.claimed_by,
                inbound_events.c.attempts,
                inbound_events.c.error,
                (inbound_events.c.claimed_at < cutoff).label("stale"),
                (inbound_events.c.retry_at <= now).label("due"),
            )
            .where(inbound_events.c.conversation_id.in_(conversation_ids), UNSETTLED)
            .order_by(inbound_events.c.conversation_id, inbound_events.c.id)
        ).all()
        claim: list[int] = []
        give_up: list[tuple[int, int, str | None]] = []
        blocked: set[int] = set()
        for row in rows:
            if row.conversation_id in blocked:
                continue
            held = self._held.get(row.id)
            if row.status == "processing" and row.claimed_by == self.worker and held is not None:
                if row.id != only:
                    continue  # in this process's hands: the next ones queue behind it here
                blocked.add(row.conversation_id)
                continue
            if row.status == "queued":
                takeable = True
            elif row.status == "failed":
                takeable = bool(row.due) or only == row.id
            elif self.single_process and row.claimed_by != self.worker:
                takeable = True  # no other process can be alive to hold it
            else:
                takeable = takeover and bool(row.stale)
            if not takeable or (only is not None and row.id != only):
                blocked.add(row.conversation_id)
                continue
            if row.attempts >= self.max_attempts:
                # A message whose answers keep dying (one that crashes the
                # process, say) is not tried forever.
                give_up.append((row.id, row.attempts, row.error))
                continue
            claim.append(row.id)
        for inbound_id, attempts, error in give_up:
            reason = f"gave up after {attempts} attempts" + (f"; last: {error}" if error else "")
            log.warning("inbound %s: %s", inbound_id, reason)
            conn.execute(
                update(inbound_events)
                .where(inbound_events.c.id == inbound_id)
                .values(status="failed", retry_at=None, claimed_by=None, error=reason[:2000])
            )
        if not claim:
            return []
        result = conn.execute(
            update(inbound_events)
            .where(inbound_events.c.id.in_(claim), UNSETTLED)
            .values(
                status="processing",
                claimed_at=now,
                claimed_by=self.worker,
                retry_at=None,
                attempts=inbound_events.c.attempts + 1,
            )
            .returning(inbound_events.c.id)
        )
        return sorted(result.scalars())

    async def pending(
        self, platform: str, *, tenant: str | None = None, limit: int = 200
    ) -> list[PendingInbound]:
        """Claim and return the events of ``platform`` (and ``tenant``) whose turn
        it is and that nobody answers: queued behind an answered one, due for a
        retry, or left by a process that stopped renewing its claim."""
        now = utcnow()
        takeover = time.monotonic() >= self._takeover_after

        def op(conn: Connection) -> list[PendingInbound]:
            stale: Any = (
                inbound_events.c.claimed_at < now - self.claim_lease if takeover else false()
            )
            if self.single_process:
                stale = or_(stale, inbound_events.c.claimed_by != self.worker)
            claimable = or_(
                inbound_events.c.status == "queued",
                and_(inbound_events.c.status == "failed", inbound_events.c.retry_at <= now),
                and_(inbound_events.c.status == "processing", stale),
            )
            query = select(inbound_events.c.conversation_id).where(
                inbound_events.c.platform == platform, claimable
            )
            if tenant is not None:
                query = query.join(
                    conversations, conversations.c.id == inbound_events.c.conversation_id
                ).where(conversations.c.tenant == tenant)
            found = sorted(set(conn.execute(query.limit(limit)).scalars()))
            if not found:
                return []
            if self.dialect == "postgresql":
                # Conversations another worker is claiming right now are
                # skipped this round rather than waited for.
                found = list(
                    conn.execute(
                        select(conversations.c.id)
                        .where(conversations.c.id.in_(found))
                        .order_by(conversations.c.id)
                        .with_for_update(skip_locked=True)
                    ).scalars()
                )
            ids = self._claim_turns(conn, found, now, only=None) if found else []
            if not ids:
                return []
            rows = (
                conn.execute(
                    select(inbound_events, conversations)
                    .join(conversations, conversations.c.id == inbound_events.c.conversation_id)
                    .where(inbound_events.c.id.in_(ids))
                    .order_by(inbound_events.c.id)
                )
            ).mappings()
            out = []
            for row in rows:
                address = ConversationAddress(
                    row["platform"], row["tenant"], row["chat"], row["thread"]
                )
                event = InboundEvent(
                    conversation=address,
                    event_id=row["event_id"],
                    user_id=row["user_id"],
                    text=row["text"],
                    user_name=row["user_name"],
                    meta=row["meta"] or {},
                )
                stored = StoredInbound(
                    row["id"], row["conversation_id"], row["message_id"], "retry"
                )
                out.append(PendingInbound(event, stored))
            return out

        found = await self._run_watched("claim unanswered inbound events", op)
        for p in found:
            self._hold(p.stored.inbound_id, p.stored.conversation_id)
        return found

    # -- answers -----------------------------------------------------------------

    async def record_answer(
        self,
        stored: StoredInbound,
        *,
        text: str,
        kind: MessageKind,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        latency_ms: int | None = None,
    ) -> int | None:
        """Store the reply and mark its inbound event answered, together.

        Idempotent: a retry after a commit whose acknowledgement was lost, or
        after another process answered the event, stores nothing (None).
        """
        now = utcnow()

        def op(conn: Connection) -> int | None:
            if not self._sql.rows(
                conn, self._sql.mark_answered, {"inbound_id": stored.inbound_id, "now": now}
            ):
                return None
            message_id = self._sql.rows(
                conn,
                self._sql.insert_message,
                {
                    "conversation_id": stored.conversation_id,
                    "role": "assistant",
                    "kind": kind,
                    "user_id": None,
                    "reply_to": stored.message_id,
                    "text": text,
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "latency_ms": latency_ms,
                    "created_at": now,
                },
            )[0][0]
            return int(message_id)

        message_id = await self._run("store an answer", op)
        self.release(stored.inbound_id)
        return message_id

    async def mark_handled(self, stored: StoredInbound) -> None:
        """Mark an inbound event answered without a reply of its own (it was
        relayed to a person, or was agents talking among themselves)."""
        now = utcnow()
        await self._run(
            "mark an inbound event handled",
            lambda conn: self._sql.rows(
                conn, self._sql.mark_answered, {"inbound_id": stored.inbound_id, "now": now}
            ),
        )
        self.release(stored.inbound_id)

    async def mark_failed(self, inbound_id: int, error: str, *, retry: bool = True) -> None:
        """Record that answering failed.

        ``retry``: nobody was told anything, so the sweep tries again after a
        back-off while attempts and the retry window last. Without it (the
        customer was told to send the message again, say) the event is settled.
        """
        now = utcnow()

        def op(conn: Connection) -> None:
            row = conn.execute(
                select(
                    inbound_events.c.attempts,
                    (inbound_events.c.received_at >= now - self.retry_window).label("fresh"),
                ).where(inbound_events.c.id == inbound_id)
            ).first()
            retry_at = None
            note = error
            if retry and row is not None:
                attempts = int(row.attempts)
                if attempts < self.max_attempts and row.fresh:
                    delay = self.retry_delays[min(max(attempts - 1, 0), len(self.retry_delays) - 1)]
                    retry_at = now + timedelta(seconds=delay)
                else:
                    note = f"{error} (not retried: {attempts} attempts"
                    note += ")" if row.fresh else ", too old)"
            conn.execute(
                update(inbound_events)
                .where(inbound_events.c.id == inbound_id, inbound_events.c.status != "answered")
                .values(status="failed", error=note[:2000], claimed_by=None, retry_at=retry_at)
            )

        await self._run("mark an inbound event failed", op)
        self.release(inbound_id)


def _language(conn: Connection, conversation_id: int, detected: str | None) -> str | None:
    """The conversation's last detected language, ``detected`` from now on
    when given (read and written in the accepting transaction: no round trip)."""
    if detected is not None:
        conn.execute(
            update(conversations)
            .where(conversations.c.id == conversation_id)
            .where(or_(conversations.c.language.is_(None), conversations.c.language != detected))
            .values(language=detected)
        )
        return detected
    return conn.execute(
        select(conversations.c.language).where(conversations.c.id == conversation_id)
    ).scalar()
