"""The inbox and each conversation's order: messages are stored before they
are answered, and answered one at a time per conversation.

``accept`` stores an inbound event (a redelivery is recognised, never
answered twice); ``run`` answers it in its conversation's turn, under the
conversation's lock, after older events this process holds. A ``/reset``
stops the answer in progress instead of waiting behind it (in a group, only
its sender's own answer, unless ``stops_others`` says they may stop anyone's).
The keeper task renews this process's claims and leases while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bot.commands import parse_command
from bot.errors import ConfigError, StorageError
from bot.language import detect_language
from bot.metrics import Metrics
from bot.text import clean
from bot.throttle import PersonThrottle
from bot.types import Accepted, ConversationRef, Inbound, Reply
from storage.repository import (
    HistoryItem,
    InboundEvent,
    MessageKind,
    Repository,
)

log = logging.getLogger(__name__)

# The answer to one message, given the event that stops it (set by /reset).
Work = Callable[[asyncio.Event], Awaitable[Reply]]


# Whether the sender of a /reset in a group may stop another member's answer.
StopsOthers = Callable[[Inbound], Awaitable[bool]]


@dataclass(slots=True)
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    # The answer in progress: who sent the message it answers, and the event
    # that stops it (set when a /reset arrives). A fresh event per answer, so
    # a late stop cannot reach the next one.
    answering: str = ""
    stop: asyncio.Event = field(default_factory=asyncio.Event)


class Turns:
    """Accepting, claiming and ordering the messages of every conversation."""

    def __init__(
        self,
        *,
        repository: Repository,
        metrics: Metrics,
        max_input_chars: int,
        history_messages: int,
        memory: int = 10_000,
        heartbeat: float | None = None,
        throttle: PersonThrottle | None = None,
        stops_others: StopsOthers | None = None,
    ) -> None:
        self.repository = repository
        # The per-person limit, counted here as messages arrive (None: no limit).
        self.throttle = throttle
        # In a group a /reset stops its sender's own answer; another member's
        # only when this says so (an admin wiping the group's history).
        self.stops_others = stops_others
        self._checks: set[asyncio.Task[None]] = set()
        self.metrics = metrics
        self.max_input_chars = max_input_chars
        self.history_messages = history_messages
        self._slots: dict[str, _Slot] = {}
        # Bumped whenever a conversation's stored history may have changed, so
        # history read when a message was accepted is used only while current.
        # Bounded: forgetting a conversation bumps the epoch, which only costs
        # a history read for messages accepted before.
        self.versions: OrderedDict[str, int] = OrderedDict()
        self._memory = memory
        self._epoch = 0
        # Claims are renewed several times within their lease, so one late
        # renewal does not hand a live answer to another process.
        lease = repository.claim_lease.total_seconds()
        self.heartbeat = heartbeat if heartbeat is not None else max(0.05, lease / 6)
        self._keeper: asyncio.Task[None] | None = None
        # Platforms whose adapters sweep for pending events (answer later, in
        # the background). The others answer in the request that brought the
        # message (web chat, terminal): their messages never queue, and a
        # failed answer there cannot be given later.
        self._swept: set[str] = set()

    def sweeps(self, platform: str) -> bool:
        """Whether ``platform``'s adapter sweeps, so a message can be answered later."""
        return platform in self._swept

    # -- background upkeep --------------------------------------------------------

    def start(self) -> None:
        """Start renewing this process's claims and leases (idempotent)."""
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep(), name="deskmate-claims")

    async def aclose(self) -> None:
        """Stop renewing, and release the leases (the next process need not wait)."""
        for check in list(self._checks):
            check.cancel()
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        try:
            await self.repository.release_leases()
        except StorageError:
            log.warning("could not release leases; they lapse on their own")

    async def _keep(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self.repository.renew_claims()
            except StorageError as exc:
                if not failing:
                    log.error("could not renew claims on inbound events: %s", exc)
                failing = True
            except Exception:
                # The keeper must outlive any one failure, or every claim lapses.
                log.exception("renewing claims failed")
            else:
                if failing:
                    log.info("claims on inbound events renewed again")
                failing = False

    async def take_lease(self, name: str, *, purpose: str, wait: float | None = None) -> None:
        """Hold ``name`` for as long as this process runs, or raise ``ConfigError``.

        A lease left by a process that was killed lapses within the claim
        lease; until ``wait`` (that long by default) it is waited for.
        """
        lease = self.repository.claim_lease.total_seconds()
        deadline = time.monotonic() + (wait if wait is not None else lease + self.heartbeat)
        told = False
        while True:
            holder = await self.repository.take_lease(name)
            if holder is None:
                self.start()
                return
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"{purpose} is already done by another Deskmate process ({holder}). "
                    "Stop that one, or run every process with a webhook instead."
                )
            if not told:
                log.warning(
                    "%s: waiting for %s to let go (a stopped process lets go within %.0f s)",
                    purpose,
                    holder,
                    lease,
                )
                told = True
            await asyncio.sleep(min(1.0, self.heartbeat))

    # -- the inbox ---------------------------------------------------------------

    async def accept(self, inbound: Inbound) -> Accepted:
        """Store ``inbound`` (raises ``StorageError`` if that fails)."""
        cleaned = clean(inbound.text, max_chars=self.max_input_chars)
        command = parse_command(cleaned.text)
        kind: MessageKind = "command" if command or not cleaned.text else "chat"
        version = self.history_version(inbound.ref.key)
        # Kept as the conversation's language in the accepting transaction
        # (a command's words are the bot's, not the customer's language).
        detected = detect_language(cleaned.text) if kind == "chat" else None
        stored = await self.repository.accept(
            _event(inbound, cleaned.text),
            kind=kind,
            history_limit=self.history_messages if kind == "chat" else 0,
            in_turn=inbound.ref.platform in self._swept,
            language=detected,
        )
        self.metrics.events.labels(
            inbound.ref.platform, "duplicate" if stored.status == "duplicate" else "received"
        ).inc()
        if self.throttle is not None and kind == "chat" and stored.status != "duplicate":
            # Counted now, not when its turn comes: by then the answers to
            # earlier messages have let the person's bucket refill.
            self.throttle.arrived(stored.inbound_id, inbound.platform_user)
        if stored.status == "duplicate":
            log.info("redelivered %s event %s ignored", inbound.ref.platform, inbound.event_id)
        elif stored.status == "queued":
            # Answered by whichever process sweeps it up once the conversation's
            # earlier message is answered.
            log.info("inbound %s waits for the conversation's turn", stored.inbound_id)
        elif cleaned.truncated:
            log.info(
                "inbound %s truncated from %d characters",
                stored.inbound_id,
                cleaned.original_length,
            )
        return Accepted(
            inbound=inbound,
            inbound_id=stored.inbound_id,
            duplicate=stored.status in ("duplicate", "queued"),
            stored=stored,
            text=cleaned.text,
            truncated=cleaned.truncated,
            command=command,
            history_version=version,
            detected=detected,
        )

    async def pending_of_tenant(self, platform: str, tenant: str | None) -> list[Accepted]:
        """Stored events of ``platform`` (of ``tenant`` only, unless None) whose
        turn it is and that nobody answers, claimed for answering; from now on
        ``platform`` counts as swept."""
        self._swept.add(platform)
        found = await self.repository.pending(platform, tenant=tenant)
        return [
            Accepted(
                inbound=_inbound(p.event),
                inbound_id=p.stored.inbound_id,
                duplicate=False,
                stored=p.stored,
                text=p.event.text,
                truncated=False,
                command=parse_command(p.event.text),
            )
            for p in found
        ]

    # -- order -------------------------------------------------------------------

    async def run(self, accepted: Accepted, work: Work) -> Reply:
        """Run ``work`` for ``accepted`` in its conversation's turn; the claim is
        released however it ends."""
        try:
            await self._after_older(accepted)
            self.repository.started(accepted.inbound_id)
            return await self._in_turn(accepted, work)
        finally:
            # However it ended, this process is done with it: a claim left
            # unsettled (cancelled, crashed) lapses and the sweep takes it.
            self.repository.release(accepted.inbound_id)

    async def _after_older(self, accepted: Accepted, within: float = 5.0) -> None:
        """Let older events of the conversation that this process claimed but
        has not begun answering (a replay still being handed out) go first."""
        deadline = time.monotonic() + within
        conversation_id = accepted.stored.conversation_id
        while self.repository.claimed_before(conversation_id, accepted.inbound_id):
            if time.monotonic() >= deadline:
                log.warning(
                    "inbound %s: older messages never began; going ahead", accepted.inbound_id
                )
                return
            await asyncio.sleep(0.05)

    async def _in_turn(self, accepted: Accepted, work: Work) -> Reply:
        key = accepted.inbound.ref.key
        if accepted.command and accepted.command[0] == "reset":
            # /reset must not wait behind the answer it is meant to interrupt.
            self._interrupt(accepted.inbound)
        slot = self._slots.setdefault(key, _Slot())
        slot.users += 1
        platform = accepted.inbound.ref.platform
        outcome = "failed"
        try:
            async with slot.lock:
                slot.answering = accepted.inbound.platform_user
                slot.stop = asyncio.Event()
                try:
                    reply = await work(slot.stop)
                    outcome = "failed" if reply.failed else "answered"
                    return reply
                finally:
                    self.bump(key)
                    self.metrics.events.labels(platform, outcome).inc()
                    if outcome == "answered":
                        self.metrics.latency.labels(platform).observe(
                            time.monotonic() - accepted.received
                        )
        finally:
            slot.users -= 1
            if slot.users == 0:
                self._slots.pop(key, None)

    def _interrupt(self, sender: Inbound) -> None:
        """Stop the answer in progress in ``sender``'s conversation: in a group
        only if it answers ``sender``, or ``stops_others`` allows them more
        (checked on the side, so that the /reset keeps its place in line)."""
        slot = self._slots.get(sender.ref.key)
        if slot is None or not slot.lock.locked():
            return
        stop = slot.stop
        if not sender.in_group or slot.answering == sender.platform_user:
            stop.set()
        elif self.stops_others is not None:
            check = asyncio.create_task(self._stop_if_allowed(sender, stop))
            self._checks.add(check)
            check.add_done_callback(self._checks.discard)

    async def _stop_if_allowed(self, sender: Inbound, stop: asyncio.Event) -> None:
        assert self.stops_others is not None
        try:
            if await self.stops_others(sender):
                stop.set()
        except StorageError as exc:
            log.warning("/reset by %s stops only their own answer: %s", sender.platform_user, exc)

    # -- history read at accept time ----------------------------------------------

    def bump(self, key: str) -> None:
        """The conversation ``key``'s stored history may have changed."""
        self.versions[key] = self.versions.get(key, 0) + 1
        self.versions.move_to_end(key)
        if len(self.versions) > self._memory:
            self.versions.popitem(last=False)
            self._epoch += 1

    def invalidate(self) -> None:
        """Any conversation's stored history may have changed."""
        self._epoch += 1

    def history_version(self, key: str) -> tuple[int, int]:
        return (self._epoch, self.versions.get(key, 0))

    async def history(self, accepted: Accepted) -> Sequence[HistoryItem]:
        """The conversation's history up to ``accepted``: as read when it was
        accepted while that is still current, else read again."""
        history: Sequence[HistoryItem] | None = accepted.stored.history
        if history is None or accepted.history_version != self.history_version(
            accepted.inbound.ref.key
        ):
            history = await self.repository.history(
                accepted.stored.conversation_id,
                upto_message_id=accepted.stored.message_id,
                limit=self.history_messages,
            )
        return history


def _event(inbound: Inbound, text: str) -> InboundEvent:
    return InboundEvent(
        conversation=inbound.ref,
        event_id=inbound.event_id,
        user_id=inbound.platform_user,
        text=text,
        user_name=inbound.user_name,
        meta=inbound.meta,
    )


def _inbound(event: InboundEvent) -> Inbound:
    where = event.conversation
    ref = ConversationRef(where.platform, where.tenant, where.chat, where.thread)
    # Stored ids are Inbound.platform_user: "<platform>:<user>".
    user = event.user_id.removeprefix(f"{where.platform}:")
    return Inbound(
        ref=ref,
        user=user,
        text=event.text,
        event_id=event.event_id,
        user_name=event.user_name,
        meta=event.meta,
    )
