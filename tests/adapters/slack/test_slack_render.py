"""Slack's streaming renderer against an in-memory sink: pacing and splitting."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

from adapters.slack.convert import BLOCKS_TEXT_LIMIT, MESSAGE_LIMIT
from adapters.slack.render import PLACEHOLDER, EditPacer, thread_renderer


class Sink:
    def __init__(self) -> None:
        self.messages: dict[str, str] = {}
        self.log: list[tuple[str, str, str, float]] = []
        self._n = 0

    async def post(self, text: str) -> str:
        self._n += 1
        ts = f"{self._n}.0"
        self.messages[ts] = text
        self.log.append(("post", ts, text, asyncio.get_running_loop().time()))
        return ts

    async def update(self, ts: str, text: str) -> None:
        assert ts in self.messages
        self.messages[ts] = text
        self.log.append(("update", ts, text, asyncio.get_running_loop().time()))


async def stream(parts: list[str], delay: float) -> AsyncIterator[str]:
    for part in parts:
        await asyncio.sleep(delay)
        yield part


async def test_placeholder_then_paced_edits_then_exact_final_text() -> None:
    sink = Sink()
    renderer = thread_renderer(sink=sink, pacer=EditPacer(0.1), keys=("T1/C1", "T1"))
    parts = [f"w{i} " for i in range(40)]
    final = await renderer.render(stream(parts, 0.01))
    assert final == "".join(parts)
    assert sink.log[0][:3] == ("post", "1.0", PLACEHOLDER)
    assert sink.messages == {"1.0": final}
    edits = [entry for entry in sink.log if entry[0] == "update"]
    # ~0.4 s of streaming at one edit per 0.1 s, plus the final edit.
    assert 2 <= len(edits) <= 7
    times = [entry[3] for entry in edits[:-1]]
    assert all(b - a >= 0.09 for a, b in itertools.pairwise(times))


async def test_pacing_is_shared_by_every_thread_of_a_workspace() -> None:
    sink = Sink()
    pacer = EditPacer(0.2)
    # Three threads: two in one channel, one in another channel of the same workspace.
    renderers = [
        thread_renderer(sink=sink, pacer=pacer, keys=(f"T1/{c}", "T1"), placeholder="")
        for c in ("C1", "C1", "C2")
    ]
    parts = [f"w{i} " for i in range(20)]
    await asyncio.gather(*(r.render(stream(parts, 0.02)) for r in renderers))
    # 0.4 s of streaming per renderer; intermediate edits of the three together
    # stay near one per 0.2 s instead of three.
    intermediate = [e for e in sink.log if e[2] != "".join(parts)]
    assert len(intermediate) <= 6
    assert all(text == "".join(parts) for text in sink.messages.values())


async def test_long_answer_is_split_across_messages_without_loss() -> None:
    sink = Sink()
    renderer = thread_renderer(sink=sink, pacer=EditPacer(0.0), keys=("T1/C1", "T1"))
    words = [f"token{i:05d} " for i in range(4_100)]  # 45,100 characters
    final = await renderer.render(stream(words, 0))
    assert len(final) > MESSAGE_LIMIT
    # Each message stays within what Slack takes as blocks.
    assert len(renderer.messages) == 4
    assert all(len(sink.messages[ts]) <= BLOCKS_TEXT_LIMIT for ts in renderer.messages)
    assert "".join(sink.messages[ts] for ts in renderer.messages) == final


async def test_every_write_waits_for_its_slot() -> None:
    # The placeholder, every further message of a long answer and the final
    # edit are all paced: Slack takes about one write a second per channel.
    sink = Sink()
    pacer = EditPacer(0.05)
    pacer.reserve("T1/C1", "T1")  # another reply in the channel wrote just now
    renderer = thread_renderer(sink=sink, pacer=pacer, keys=("T1/C1", "T1"))
    started = asyncio.get_running_loop().time()
    words = [f"token{i:05d} " for i in range(3_000)]  # 33,000 characters at once
    final = await renderer.render(stream(["".join(words)], 0))
    assert "".join(sink.messages[ts] for ts in renderer.messages) == final
    assert len(sink.log) >= 4
    times = [started, *(entry[3] for entry in sink.log)]
    assert all(b - a >= 0.045 for a, b in itertools.pairwise(times))


async def test_blank_answer_still_replaces_the_placeholder() -> None:
    sink = Sink()
    renderer = thread_renderer(sink=sink, pacer=EditPacer(0.0), keys=("T1/C1", "T1"))
    final = await renderer.render(stream(["  "], 0))
    assert sink.messages["1.0"] == final != PLACEHOLDER


def test_pacer_hands_out_one_slot_per_interval_per_key() -> None:
    now = [100.0]
    pacer = EditPacer(1.2, clock=lambda: now[0])
    assert pacer.reserve("T1/C1", "T1") == 0
    assert abs(pacer.reserve("T1/C1", "T1") - 1.2) < 1e-9  # a second thread waits its turn
    assert abs(pacer.reserve("T1/C2", "T1") - 2.4) < 1e-9  # same workspace, other channel
    assert pacer.reserve("T2/C1", "T2") == 0  # another workspace has its own budget
    now[0] += 10
    assert pacer.reserve("T1/C1", "T1") == 0
    pacer.mark("T1/C1", "T1")  # a final edit just went out
    assert abs(pacer.reserve("T1/C1", "T1") - 1.2) < 1e-9
