"""A suggestion streaming into a ticket's thread while the model writes it.

A placeholder is queued through the outbox as soon as the model is asked
(under ``LIVE_KEY``: one per cause, so a replay queues nothing twice); the
text so far replaces it at the pace the platform tolerates for edits, each
edit showing the latest text (edits in between are skipped, not queued).
The finished suggestion is posted under its own key and the outbox worker
makes it the final edit of that message, with its buttons. The streamed
text is marked as a draft not sent to the customer, and nothing of it is
relayed: only Send relays, and only the finished text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from bot.messages import say
from storage.addresses import ConversationAddress
from storage.handoff_repo import HandoffRepository
from storage.suggestions_repo import LIVE_KEY

log = logging.getLogger(__name__)

# Shown after the text while more is coming.
CURSOR = " ▍"


class LiveEdits(Protocol):
    """What a streaming suggestion needs of the outbox worker."""

    def edit_interval(self, platform: str) -> float | None: ...

    async def edit_live(self, cause: str, text: str) -> bool: ...


class LiveDraft:
    """One suggestion's streaming message. ``start`` queues the placeholder,
    ``show`` hands over the text so far, ``close`` waits for the last edit
    (the finished post must come after every edit), ``withdraw`` says the
    draft came to nothing."""

    def __init__(
        self,
        *,
        live: LiveEdits,
        tickets: HandoffRepository,
        space: ConversationAddress,
        ticket_id: int,
        cause: str,
        interval: float,
        language: str = "en",
    ) -> None:
        self.live = live
        # The agents' language, for the words around the draft.
        self.language = language
        self.tickets = tickets
        self.space = space
        self.ticket_id = ticket_id
        self.cause = cause
        self.interval = interval
        self.started = False
        self.edits = 0
        self._text = ""
        self._shown = ""
        self._changed = asyncio.Event()
        self._done = False
        self._finished = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Queue the placeholder in the ticket's thread and begin editing it."""
        if self.started:
            return
        self.started = True
        await self.tickets.enqueue(
            LIVE_KEY.format(cause=self.cause),
            self.space,
            say("copilot.live", self.language, text=CURSOR.strip()),
            kind="to_ticket",
            ticket_id=self.ticket_id,
        )
        self._task = asyncio.create_task(self._pump(), name=f"live:{self.cause}")

    def show(self, text: str) -> None:
        """The model's text so far (shown at the next edit slot)."""
        if text != self._text:
            self._text = text
            self._changed.set()

    async def close(self) -> None:
        """Stop editing, after the edit in flight (if any) has finished."""
        self._done = True
        self._finished.set()
        self._changed.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    def leave(self) -> None:
        """Let the message be: another process finished this suggestion."""
        self.started = False

    async def withdraw(self) -> None:
        """The draft was not kept (the ticket closed, or its customer asked to
        be forgotten, meanwhile): say so in its message, with none of its text."""
        await self.close()
        if not self.started:
            return
        await self.tickets.suggestions.drop_live(cause=self.cause)
        await self.live.edit_live(self.cause, say("copilot.live_withdrawn", self.language))

    async def _pump(self) -> None:
        live = self.live
        last = 0.0
        while not self._done:
            await self._changed.wait()
            self._changed.clear()
            wait = last + self.interval - time.monotonic()
            if wait > 0:
                # Edits in between are folded into one: the latest text wins.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._finished.wait(), timeout=wait)
            if self._done or self._text == self._shown:
                continue
            text = self._text
            try:
                edited = await live.edit_live(
                    self.cause, say("copilot.live", self.language, text=text + CURSOR)
                )
            except Exception:
                log.exception("suggestion %s: streaming edit failed", self.cause)
                edited = False
            last = time.monotonic()
            if edited:
                self._shown = text
                self.edits += 1
            else:
                # Not in the chat yet: try again at the next slot.
                self._changed.set()
