"""Streaming a reply into a Slack thread: Slack's part of progressive rendering.

The algorithm (placeholder, paced ``chat.update`` edits, splitting, final
pass) is ``adapters.common.StreamRenderer``; this module adds what is
Slack's own: the placeholder and empty-answer texts, Slack's message size
and splitting, and pacing every write to Slack's rate limits.

Slack allows about one message per second per channel (short bursts aside),
and ``chat.update`` is a Tier 3 method: about 50 calls a minute per
workspace, shared by every conversation in it. Every write of a reply
(placeholder, edits, the final text, the further messages of a long answer)
therefore takes a slot of the shared ``EditPacer``: posts on the channel's
key, edits on the channel's and the workspace's.
"""

from __future__ import annotations

import asyncio

from adapters.common import EditPacer, MessageSink, StreamRenderer
from adapters.slack.convert import POST_LIMIT, split_first

PLACEHOLDER = "_thinking…_"
EMPTY_ANSWER = "_(no answer)_"
# Slack refuses blank text; a frozen piece that is only whitespace keeps its
# place in the thread with this instead.
BLANK_PIECE = "\u200b"


def pacing_keys(team: str, channel: str) -> tuple[str, str]:
    """The budgets one thread's writes draw on: its channel's and its workspace's."""
    return (f"{team}/{channel}", team)


def split_message(text: str) -> tuple[str, str]:
    """The first piece of ``text`` that fits one Slack message (as blocks), and the rest."""
    return split_first(text, POST_LIMIT)


async def take_slot(pacer: EditPacer, *keys: str) -> None:
    """Wait for the next write slot free on every key."""
    wait = pacer.reserve(*keys)
    if wait > 0:
        await asyncio.sleep(wait)


class PacedSink:
    """A ``MessageSink`` whose every write waits for its slot on the shared pacer.

    The renderer reserves a slot itself before each round of writes (so the
    text it shows is the newest at the slot's time); the first write of that
    round uses it, and any further write of the round (a long answer's next
    message) waits for a slot of its own.
    """

    def __init__(self, sink: MessageSink[str], pacer: EditPacer, keys: tuple[str, str]) -> None:
        self._sink = sink
        self._pacer = pacer
        self._channel = keys[:1]
        self._both = keys
        self.prepaid = False

    async def post(self, text: str) -> str:
        await self._slot(self._channel)
        try:
            return await self._sink.post(text)
        finally:
            self._pacer.mark(*self._channel)

    async def update(self, message: str, text: str) -> None:
        await self._slot(self._both)
        try:
            await self._sink.update(message, text)
        finally:
            self._pacer.mark(*self._both)

    async def _slot(self, keys: tuple[str, ...]) -> None:
        if self.prepaid:
            self.prepaid = False
            return
        await take_slot(self._pacer, *keys)


class _RoundPacer(EditPacer):
    """The renderer's view of the shared pacer: a slot it reserves is handed to
    the sink's next write instead of being taken twice."""

    def __init__(self, shared: EditPacer, sink: PacedSink) -> None:
        super().__init__(shared.interval)
        self._shared = shared
        self._sink = sink

    def reserve(self, *keys: str) -> float:
        self._sink.prepaid = True
        return self._shared.reserve(*keys)

    def mark(self, *keys: str) -> None:
        self._shared.mark(*keys)


def thread_renderer(
    *,
    sink: MessageSink[str],
    pacer: EditPacer,
    keys: tuple[str, str],
    placeholder: str = PLACEHOLDER,
) -> StreamRenderer[str]:
    """A renderer for one reply into one thread (or DM); messages are ``ts``.

    ``keys`` are ``pacing_keys(team, channel)``. Every write waits for its slot
    on ``pacer``, the placeholder and the final edit included: a write Slack
    refuses with 429 costs a whole ``Retry-After``.
    """
    paced = PacedSink(sink, pacer, keys)
    return StreamRenderer(
        sink=paced,
        pacer=_RoundPacer(pacer, paced),
        keys=keys,
        split=split_message,
        placeholder=placeholder,
        empty=EMPTY_ANSWER,
        blank_piece=BLANK_PIECE,
        pace_final=True,
    )


__all__ = [
    "EMPTY_ANSWER",
    "PLACEHOLDER",
    "EditPacer",
    "MessageSink",
    "PacedSink",
    "pacing_keys",
    "split_message",
    "take_slot",
    "thread_renderer",
]
