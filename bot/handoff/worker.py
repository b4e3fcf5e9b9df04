"""The outbox worker: sends what the help desk queued, exactly once, and keeps
the clocks of open tickets (reminders, closing idle ones).

Each row is claimed with a lease before it is sent and marked sent right
after, so a row is sent again only if the process dies in between (then at
most once more). A refusal is retried with a growing pause; a relay that
finally fails is reported to the agents in the ticket, never dropped silently.

A message for a customer whose send may have arrived all the same
(``DeliveryUnconfirmed``: a timeout after the request went out) is not sent
again by itself: it is marked unconfirmed and the agents are told in the
ticket, with a button to send it again (``/resend``) if the customer did not
get it. No platform call can look for the lost message without risking an
edit of another message, so the customer gets it at most once unless a person
decides otherwise. Rows for the support space are retried as before: a copy
among agents is plain to see, a customer's message lost is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from bot.handoff.desk import HelpDesk
from bot.messages import say
from bot.types import (
    Channel,
    ConversationRef,
    DeliveryUnconfirmed,
    EditableChannel,
    Undeliverable,
)
from storage.errors import StorageError
from storage.handoff_repo import HandoffRepository, OutboxItem
from storage.outbox_doubts import Queued, warning_key
from storage.suggestions_repo import POST_KEY

log = logging.getLogger(__name__)

# Seconds before each retry; after the last the message is given up.
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
# Rows whose reader is the customer: at most once when a send is unconfirmed.
TO_CUSTOMER = ("to_customer", "notice")
_POST_PREFIX = POST_KEY.partition("{")[0]


class OutboxWorker:
    def __init__(
        self,
        *,
        desk: HelpDesk,
        channels: Mapping[str, Channel],
        interval: float = 0.3,
        clock_interval: float = 15.0,
    ) -> None:
        self.desk = desk
        self.tickets: HandoffRepository = desk.tickets
        self.channels = dict(channels)
        self.interval = interval
        self.clock_interval = clock_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # Suggestions stream into the ticket's thread through this worker's channels.
        desk.live = self

    def start(self) -> None:
        self.tickets.on_enqueue = self.wake
        self._task = asyncio.create_task(self._run(), name="outbox")

    def wake(self) -> None:
        """Look at the outbox now (something was queued)."""
        self._wake.set()

    async def stop(self, *, grace: float = 5.0) -> None:
        """Finish the row in hand (bounded by ``grace`` seconds); the rest stays queued."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, grace)
            self._task = None

    async def _run(self) -> None:
        last_clock = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                sent = await self.flush()
                if loop.time() - last_clock >= self.clock_interval:
                    last_clock = loop.time()
                    await self.tick_clocks()
            except StorageError:
                log.exception("outbox: the database failed; trying again")
                sent = 0
            except Exception:
                log.exception("outbox: unexpected failure; trying again")
                sent = 0
            if sent:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def flush(self) -> int:
        """Send every due row once; returns how many were handled."""
        items = await self.tickets.claim_due()
        for item in items:
            await self._deliver(item)
        return len(items)

    async def tick_clocks(self) -> None:
        settings = self.desk.settings
        now = datetime.now(UTC)
        for ticket in await self.tickets.due_reminders(settings.remind):
            if await self.tickets.mark_reminded(ticket.id, now - settings.remind):
                await self.desk.remind(ticket, now)
        for ticket in await self.tickets.idle(settings.idle):
            await self.desk.close_idle(ticket)

    async def _deliver(self, item: OutboxItem) -> None:
        if not await self.tickets.renew(item.id):
            return  # our claim lapsed while earlier rows were sent; it is another's now
        channel = self.channels.get(item.address.platform)
        if channel is None:
            await self._give_up(item, f"no {item.address.platform} connection is configured")
            return
        try:
            message = await self._send(channel, item)
        except _NotYet:
            await self.tickets.defer(item.id, delay=1.0)
            return
        except Undeliverable as exc:
            await self._give_up(item, str(exc))
            return
        except DeliveryUnconfirmed as exc:
            if item.kind in TO_CUSTOMER:
                await self._unconfirmed(item, str(exc))
            else:
                await self._retry(item, exc)
            return
        except Exception as exc:
            await self._retry(item, exc)
            return
        await self.tickets.sent(item.id, message=message)

    async def _retry(self, item: OutboxItem, exc: Exception) -> None:
        if item.attempts + 1 >= len(RETRY_DELAYS):
            await self._give_up(item, f"{exc!r}")
        else:
            delay = RETRY_DELAYS[item.attempts]
            log.warning("outbox %s: %r; retrying in %.0f s", item.key, exc, delay)
            await self.tickets.retry(item.id, repr(exc), delay=delay)

    async def _unconfirmed(self, item: OutboxItem, error: str) -> None:
        """Stop sending a customer's message that may have arrived, and ask the
        ticket's agents (in the same transaction) whether to send it again."""
        log.error("outbox %s: not confirmed, so not sent again by itself: %s", item.key, error)
        ticket = await self.tickets.get(item.ticket_id) if item.ticket_id is not None else None
        if ticket is None or not (ticket.posted or ticket.open):
            # A ticket that never reached its space (abandoned): nobody to ask.
            await self.tickets.unconfirmed(item.id, error)
            return
        language = await self.desk.ticket_language(ticket)
        tell = Queued(
            # One warning per unconfirmed send: a row sent again can be unconfirmed again.
            warning_key(item.id, item.attempts),
            self.desk.space_address(ticket),
            say("handoff.unconfirmed", language, id=ticket.id, row=item.id, text=item.text[:500]),
            kind="to_ticket",
            ticket_id=ticket.id,
            buttons=((say("handoff.resend_button", language), f"/resend {item.id}"),),
        )
        await self.tickets.unconfirmed(item.id, error, tell=tell)

    async def _send(self, channel: Channel, item: OutboxItem) -> str:
        address = item.address
        if item.kind == "ticket":
            assert item.ticket_id is not None
            ticket = await self.tickets.get(item.ticket_id)
            if ticket is None:
                raise Undeliverable("the ticket is gone")
            if ticket.posted:
                return ticket.space_message  # posted before a crash; not twice
            title = say(
                "handoff.ticket_title",
                id=ticket.id,
                customer=ticket.customer_name,
                platform=ticket.customer_address.platform,
            )
            posted = await channel.open_ticket(
                address, title=title[:120], text=item.text, ticket_id=ticket.id
            )
            await self.tickets.set_posted(ticket.id, thread=posted.thread, message=posted.message)
            return posted.message
        if item.kind == "to_ticket":
            assert item.ticket_id is not None
            ticket = await self.tickets.get(item.ticket_id)
            if ticket is None:
                raise Undeliverable("the ticket is gone")
            if not ticket.posted:
                raise _NotYet
            ref = ConversationRef(
                address.platform, address.tenant, address.chat, ticket.space_thread
            )
            finished = await self._finish_streamed(channel, item)
            if finished:
                return finished
            # In a group without topics the conversation hangs off the ticket message.
            reply_to = "" if ticket.space_thread else ticket.space_message
            return await channel.post(ref, item.text, reply_to=reply_to, buttons=item.buttons)
        return await channel.post(address, item.text, buttons=item.buttons)

    # -- suggestions streaming into a ticket's thread ---------------------------------

    def edit_interval(self, platform: str) -> float | None:
        """Seconds between two edits of a message on ``platform``; None where
        its messages cannot be edited (nothing streams there)."""
        channel = self.channels.get(platform)
        return channel.edit_interval if isinstance(channel, EditableChannel) else None

    async def edit_live(self, cause: str, text: str) -> bool:
        """Show ``text`` in the streaming message of suggestion ``cause``; False
        when it is not in the chat yet or the edit failed (the finished text
        follows through the outbox all the same, so a lost edit loses nothing)."""
        live = await self.tickets.suggestions.live_post(cause=cause)
        if live is None or live.status != "sent" or not live.message:
            return False
        channel = self.channels.get(live.address.platform)
        if not isinstance(channel, EditableChannel):
            return False
        try:
            await channel.edit(live.address, live.message, text)
        except Exception as exc:
            log.info("suggestion %s: streaming edit skipped: %r", cause, exc)
            return False
        return True

    async def _finish_streamed(self, channel: Channel, item: OutboxItem) -> str:
        """Post a finished suggestion as the final edit of the message it streamed
        into; "" when it did not stream (or that message is gone): post it.
        The row is the suggestion's one post, so this happens once; an edit
        repeated after a crash writes the same text again."""
        wanted = item.key.removeprefix(_POST_PREFIX)
        if wanted == item.key or not wanted.isdigit() or not isinstance(channel, EditableChannel):
            return ""
        suggestions = self.tickets.suggestions
        live = await suggestions.live_post(suggestion_id=int(wanted))
        if live is None:
            return ""
        if live.status != "sent" or not live.message:
            # Still waiting (or failed): it must never show after the finished text.
            await suggestions.drop_live(suggestion_id=int(wanted))
            return ""
        try:
            await channel.edit(live.address, live.message, item.text, buttons=item.buttons)
        except Undeliverable as exc:
            log.info(
                "outbox %s: posted anew, the streamed message cannot take it: %s", item.key, exc
            )
            # Where the message is still there (the text outgrew it), it must
            # not look like a draft still being written.
            with contextlib.suppress(Exception):
                ticket = await self.tickets.get(item.ticket_id) if item.ticket_id else None
                language = await self.desk.ticket_language(ticket) if ticket else self.desk.language
                await channel.edit(live.address, live.message, say("copilot.live_moved", language))
            return ""
        return live.message

    async def _give_up(self, item: OutboxItem, error: str) -> None:
        log.error("outbox %s: giving up: %s", item.key, error)
        await self.tickets.retry(item.id, error, delay=0, give_up=True)
        if item.kind == "ticket" and item.ticket_id is not None:
            # Nobody can see this ticket: the customer must not wait for it.
            await self.desk.abandon(item.ticket_id, error)
        if item.kind == "to_customer" and item.ticket_id is not None:
            ticket = await self.tickets.get(item.ticket_id)
            if ticket is not None:
                await self.tickets.enqueue(
                    f"undelivered:{item.id}",  # storage.outbox_doubts.forget_warnings
                    self.desk.space_address(ticket),
                    say(
                        "handoff.undelivered",
                        await self.desk.ticket_language(ticket),
                        error=error[:200],
                        text=item.text[:500],
                    ),
                    kind="to_ticket",
                    ticket_id=ticket.id,
                )


class _NotYet(Exception):
    """The ticket this row belongs to is not in its support space yet."""
