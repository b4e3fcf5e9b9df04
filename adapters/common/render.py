"""Progressive rendering: one reply stream shown as a few platform messages.

``StreamRenderer`` owns the algorithm every chat platform shares: an optional
placeholder, edits paced by an ``EditPacer``, the text cut into
platform-sized pieces as it grows (a full piece is frozen and the next one
opens a new message), and a final pass that leaves every message holding its
exact final piece. What a message is, how long it may be and how it is sent
stay with the platform, behind ``MessageSink`` and a ``Split`` function, so
the algorithm is tested without any HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from bot.types import Retraction

M = TypeVar("M")

# Cuts ``text`` into its first piece that fits one message and the rest
# (``""`` when the whole text fits). The pieces must be exact slices, and the
# cut must not move as text is appended after the rest: frozen messages are
# never revisited.
Split = Callable[[str], tuple[str, str]]

# What a message past the first holds once its text is taken back.
RETRACTED = "…"


class MessageLost(Exception):
    """Raised by ``MessageSink.update`` when the message no longer exists
    (someone deleted it); the renderer posts the piece again as a new one."""


class MessageSink(Protocol[M]):
    """Where one reply's messages go: one chat, thread or DM.

    ``M`` is the platform's message handle (Slack ``ts``, Telegram message id).
    Errors other than ``MessageLost`` end the rendering; the renderer still
    reads the stream to its end and then raises them.
    """

    async def post(self, text: str) -> M:
        """Send a new message holding ``text``; return its handle."""
        ...

    async def update(self, message: M, text: str) -> None:
        """Replace the text of ``message``."""
        ...


class EditPacer:
    """Spaces writes, one slot per ``interval`` for each pacing key.

    A renderer reserves with all its keys (e.g. a Slack channel and its
    workspace, whose budgets both apply) and takes the next slot free on every
    one of them, so two renderers sharing a key never share a slot. Each write
    is also recorded with ``mark`` when it ends, so a slow call pushes the next
    slot out instead of letting the next write follow on its heels.
    """

    def __init__(self, interval: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if interval < 0:
            raise ValueError("interval must be >= 0")
        self.interval = interval
        self._clock = clock
        self._next: dict[str, float] = {}

    def reserve(self, *keys: str) -> float:
        """Take the next slot free on every key; returns seconds to wait for it."""
        now = self._clock()
        slot = max([now, *(self._next.get(k, now) for k in keys)])
        for key in keys:
            self._next[key] = slot + self.interval
        if len(self._next) > 10_000:
            # Keys whose next slot has passed are free anyway.
            self._next = {k: t for k, t in self._next.items() if t > now}
        return slot - now

    def mark(self, *keys: str) -> None:
        """Record a write that just ended: the next slot is ``interval`` later."""
        now = self._clock()
        for key in keys:
            self._next[key] = max(self._next.get(key, now), now + self.interval)


@dataclass(slots=True)
class _Live(Generic[M]):
    """The message still growing: its handle and the text it shows."""

    message: M
    text: str


class StreamRenderer(Generic[M]):
    """Renders one reply stream into messages through ``sink``.

    ``render(chunks)`` posts ``placeholder`` first when one is set, then shows
    the text as it streams: at most one write per pacer slot on ``keys``,
    whatever arrived meanwhile going into the next write. When the text
    outgrows a message, ``split`` cuts it; the full piece is frozen in its
    message and the rest continues in a new one. Once the stream ends, the
    last piece is written (waiting for its slot only with ``pace_final``), so
    every message holds its exact final piece. A blank answer shows ``empty``
    (nothing when ``empty`` is ``""``); a frozen piece that is only whitespace
    shows ``blank_piece`` (skipped when ``None``), since platforms refuse blank
    messages. ``messages`` lists every message posted, in order.

    A ``Retraction`` chunk takes back what was shown: the next write puts
    it alone in the first message, and any later message holds
    ``blank_piece`` (or ``RETRACTED``), since messages are never deleted.
    """

    def __init__(
        self,
        *,
        sink: MessageSink[M],
        pacer: EditPacer,
        keys: tuple[str, ...],
        split: Split,
        placeholder: str = "",
        empty: str = "",
        blank_piece: str | None = None,
        pace_final: bool = False,
    ) -> None:
        if placeholder and not empty.strip():
            raise ValueError("a placeholder needs an 'empty' text to replace it with")
        self.sink = sink
        self.pacer = pacer
        self.keys = keys
        self.split = split
        self.placeholder = placeholder
        self.empty = empty
        self.blank_piece = blank_piece
        self.pace_final = pace_final
        self.messages: list[M] = []
        self._live: _Live[M] | None = None
        self._offset = 0  # characters of the text already frozen in full messages
        self._text = ""
        self._changed = asyncio.Event()
        self._done = False
        self._retracted = False

    async def render(self, chunks: AsyncIterable[str]) -> str:
        """Consume ``chunks`` to the end and return the text shown.

        A sink error stops the writing but not the reading: the stream is
        still read to its end (whoever produces it stores the whole answer),
        then the error is raised.
        """
        if self.placeholder:
            await self._put(self.placeholder)
        writer = asyncio.create_task(self._write_loop())
        try:
            async for chunk in chunks:
                if isinstance(chunk, Retraction):
                    self._text = chunk
                    self._retracted = True
                else:
                    self._text += chunk
                self._changed.set()
        except BaseException:
            writer.cancel()
            # Nobody awaits it now; fetch its outcome so none is reported as lost.
            writer.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise
        finally:
            self._done = True
            self._changed.set()
        # The writer ends once the final text is shown; this also raises what
        # made it give up.
        await writer
        return self._final_text()

    def _final_text(self) -> str:
        if not self._text.strip() and self._offset == 0:
            return self.empty
        return self._text

    async def _write_loop(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if not self._done or self.pace_final:
                await self._wait_slot()
            # Checked after the wait: text that arrived meanwhile goes in this write.
            final = self._done
            if self._retracted:
                self._retracted = False
                await self._retract()
            await self._show(self._final_text() if final else self._text)
            self.pacer.mark(*self.keys)
            if final:
                return

    async def _wait_slot(self) -> None:
        wait = self.pacer.reserve(*self.keys)
        if wait > 0:
            await asyncio.sleep(wait)

    async def _retract(self) -> None:
        """Take back every piece shown: the first message is written again
        from the start, later ones are emptied."""
        if not self.messages:
            return
        first, *later = self.messages
        for message in later:
            with contextlib.suppress(MessageLost):
                await self.sink.update(message, self.blank_piece or RETRACTED)
        self._offset = 0
        # Unknown text: the next write always updates it.
        self._live = _Live(first, "\0")

    async def _show(self, text: str) -> None:
        """Bring the messages in line with ``text``."""
        tail = text[self._offset :]
        while True:
            head, rest = self.split(tail)
            if not rest:
                break
            if head.strip():
                await self._put(head)
            elif self.blank_piece is not None:
                await self._put(self.blank_piece)
            # A full piece never changes again: freeze it, open the next message.
            self._offset += len(head)
            self._live = None
            tail = rest
        if tail.strip():
            await self._put(tail)

    async def _put(self, piece: str) -> None:
        """Show ``piece`` in the live message, opening one when there is none."""
        if self._live is not None:
            if self._live.text == piece:
                return
            try:
                await self.sink.update(self._live.message, piece)
            except MessageLost:
                self._live = None
            else:
                self._live.text = piece
                return
        message = await self.sink.post(piece)
        self._live = _Live(message, piece)
        self.messages.append(message)
