"""Streaming a reply into a Slack thread: Slack's part of progressive rendering.

The algorithm (placeholder, paced ``chat.update`` edits, splitting, final
pass) is ``adapters.common.StreamRenderer``; this module adds what is
Slack's own: the placeholder and empty-answer texts, Slack's message size
and splitting, and the pacing keys (Slack allows about one message write per
second per channel, and ``chat.update`` is a Tier 3 method, about 50 calls a
minute per workspace, shared by every conversation in it).
"""

from __future__ import annotations

from adapters.common import EditPacer, MessageSink, StreamRenderer
from adapters.slack.convert import MESSAGE_LIMIT, split_first

PLACEHOLDER = "_thinking…_"
EMPTY_ANSWER = "_(no answer)_"
# Slack refuses blank text; a frozen piece that is only whitespace keeps its
# place in the thread with this instead.
BLANK_PIECE = "\u200b"


def pacing_keys(team: str, channel: str) -> tuple[str, str]:
    """The budgets one thread's edits draw on: its channel's and its workspace's."""
    return (f"{team}/{channel}", team)


def split_message(text: str) -> tuple[str, str]:
    """The first piece of ``text`` that fits one Slack message, and the rest."""
    return split_first(text, MESSAGE_LIMIT)


def thread_renderer(
    *,
    sink: MessageSink[str],
    pacer: EditPacer,
    keys: tuple[str, ...],
    placeholder: str = PLACEHOLDER,
) -> StreamRenderer[str]:
    """A renderer for one reply into one thread (or DM); messages are ``ts``.

    Final edits are not held back by the pacer (a 429 is retried after its
    Retry-After by the Web API client); they only push the next slots out.
    """
    return StreamRenderer(
        sink=sink,
        pacer=pacer,
        keys=keys,
        split=split_message,
        placeholder=placeholder,
        empty=EMPTY_ANSWER,
        blank_piece=BLANK_PIECE,
        pace_final=False,
    )


__all__ = [
    "EMPTY_ANSWER",
    "PLACEHOLDER",
    "EditPacer",
    "MessageSink",
    "pacing_keys",
    "split_message",
    "thread_renderer",
]
