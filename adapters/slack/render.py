"""Streaming a reply into Slack messages: progressive ``chat.update`` edits,
paced per channel and workspace, split across messages when the answer outgrows one.

The renderer talks to Slack through the narrow ``MessageSink`` protocol, so
its pacing and splitting are tested without any HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from adapters.slack.convert import message_chunks

PLACEHOLDER = "_thinking…_"
EMPTY_ANSWER = "_(no answer)_"


class MessageSink(Protocol):
    """Where rendered text goes: one Slack thread (or DM) of one channel."""

    async def post(self, text: str) -> str:
        """Post a new message with ``text``; return its ts."""
        ...

    async def update(self, ts: str, text: str) -> None:
        """Replace the text of the message ``ts``."""
        ...


class EditPacer:
    """Spaces intermediate edits, one slot per ``interval`` for each key.

    A renderer reserves with two keys, its channel and its workspace: Slack
    allows about one message write per second per channel, and ``chat.update``
    is a Tier 3 method (about 50 calls a minute per workspace), so every
    conversation of a workspace shares that budget. Each caller takes the next
    slot free on all its keys, so two threads never share one. Final edits are
    never held back (a 429 is retried after its Retry-After by the Web API
    client); they only push the next slots out.
    """

    def __init__(self, interval: float, *, clock: Callable[[], float] = time.monotonic) -> None:
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
        """Record a write made outside the slots (a final edit)."""
        now = self._clock()
        for key in keys:
            self._next[key] = max(self._next.get(key, now), now + self.interval)


@dataclass(slots=True)
class _Posted:
    ts: str
    text: str


@dataclass(slots=True)
class StreamRenderer:
    """Renders one reply into one thread.

    ``render(chunks)`` posts a placeholder (when ``placeholder`` is set),
    edits it as text arrives at most once per pacing interval, opens further
    messages when the text outgrows one message, and finishes with every
    message holding its exact final piece. ``messages`` lists the ts of each
    message written, in order.
    """

    sink: MessageSink
    pacer: EditPacer
    # Pacing keys, e.g. ("T1/C1", "T1"): the channel and its workspace.
    keys: tuple[str, ...]
    placeholder: str = PLACEHOLDER
    messages: list[str] = field(default_factory=list)
    _posted: list[_Posted] = field(default_factory=list)
    _text: str = ""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _done: bool = False

    async def render(self, chunks: AsyncIterable[str]) -> str:
        """Consume ``chunks`` and return the whole text written."""
        if self.placeholder:
            await self._write([self.placeholder])
        flusher = asyncio.create_task(self._flush_loop())
        try:
            async for chunk in chunks:
                self._text += chunk
                self._changed.set()
        finally:
            self._done = True
            self._changed.set()
            # Let an edit in flight finish rather than cutting a request in half.
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        final = self._text if self._text.strip() else EMPTY_ANSWER
        await self._write(message_chunks(final))
        self.pacer.mark(*self.keys)
        return final

    async def _flush_loop(self) -> None:
        while not self._done:
            await self._changed.wait()
            self._changed.clear()
            if self._done:
                return
            wait = self.pacer.reserve(*self.keys)
            if wait > 0:
                await asyncio.sleep(wait)
                if self._done:
                    return
            await self._write(message_chunks(self._text))

    async def _write(self, pieces: list[str]) -> None:
        """Bring the posted messages in line with ``pieces``."""
        for i, piece in enumerate(pieces):
            if not piece.strip():
                if i == len(pieces) - 1:
                    continue  # Slack refuses blank text; wait for words to arrive
                piece = "\u200b"  # keep message order; the piece was only whitespace
            if i < len(self._posted):
                posted = self._posted[i]
                if posted.text != piece:
                    await self.sink.update(posted.ts, piece)
                    posted.text = piece
            else:
                ts = await self.sink.post(piece)
                self._posted.append(_Posted(ts, piece))
                self.messages.append(ts)
