"""The shared progressive renderer against an in-memory sink: no HTTP."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from adapters.common import EditPacer, MessageLost, StreamRenderer
from adapters.common.render import RETRACTED
from bot.types import Retraction


class Sink:
    """Messages by id, and every call with the loop time it was made at."""

    def __init__(self) -> None:
        self.messages: dict[int, str] = {}
        self.calls: list[tuple[str, int, str, float]] = []
        self.lost: set[int] = set()
        self.fail_after: int | None = None

    def _record(self, kind: str, message: int, text: str) -> None:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("the platform said no")
        self.calls.append((kind, message, text, asyncio.get_running_loop().time()))

    async def post(self, text: str) -> int:
        message = len(self.messages) + 1
        self._record("post", message, text)
        self.messages[message] = text
        return message

    async def update(self, message: int, text: str) -> None:
        if message in self.lost:
            raise MessageLost(str(message))
        self._record("update", message, text)
        self.messages[message] = text

    def writes(self) -> list[float]:
        return [at for _, _, _, at in self.calls]


def split_at(limit: int):  # type: ignore[no-untyped-def]
    def split(text: str) -> tuple[str, str]:
        return (text, "") if len(text) <= limit else (text[:limit], text[limit:])

    return split


async def stream(parts: list[str], delay: float = 0.0) -> AsyncIterator[str]:
    for part in parts:
        await asyncio.sleep(delay)
        yield part


def renderer(sink: Sink, **options: object) -> StreamRenderer[int]:
    settings: dict[str, object] = {
        "pacer": EditPacer(0.0),
        "keys": ("chat",),
        "split": split_at(1_000),
    }
    settings.update(options)
    return StreamRenderer(sink=sink, **settings)  # type: ignore[arg-type]


async def test_writes_are_paced_per_key_and_the_final_text_is_exact() -> None:
    sink = Sink()
    parts = [f"w{i} " for i in range(30)]
    shown = await renderer(sink, pacer=EditPacer(0.1)).render(stream(parts, 0.01))
    assert shown == "".join(parts)
    assert sink.messages == {1: shown}
    assert sink.calls[0][0] == "post"
    # ~0.3 s of streaming at one write per 0.1 s, then the final write.
    assert 2 <= len(sink.calls) <= 6
    intermediate = sink.writes()[:-1]
    assert all(b - a >= 0.09 for a, b in itertools.pairwise(intermediate))


async def test_renderers_sharing_a_key_share_its_budget() -> None:
    sink = Sink()
    pacer = EditPacer(0.2)
    parts = [f"w{i} " for i in range(20)]
    renderers = [renderer(sink, pacer=pacer, keys=(f"chat{n % 2}", "workspace")) for n in range(3)]
    await asyncio.gather(*(r.render(stream(parts, 0.02)) for r in renderers))
    # 0.4 s each: three renderers alone would write ~2 times each before the
    # final text; sharing "workspace" they manage about that together.
    intermediate = [c for c in sink.calls if c[2] != "".join(parts)]
    assert len(intermediate) <= 4
    assert list(sink.messages.values()) == ["".join(parts)] * 3


async def test_growing_text_is_split_and_every_message_keeps_its_exact_piece() -> None:
    sink = Sink()
    text = "".join(f"{i:03d}" for i in range(100))  # 300 characters
    parts = [text[i : i + 7] for i in range(0, len(text), 7)]
    view = renderer(sink, split=split_at(40), pacer=EditPacer(0.005))
    await view.render(stream(parts, 0.001))
    pieces = [sink.messages[m] for m in view.messages]
    assert pieces == [text[i : i + 40] for i in range(0, len(text), 40)]
    # A frozen message is never edited again once the next one was opened.
    opened = {m: i for i, (kind, m, _, _) in enumerate(sink.calls) if kind == "post"}
    for message, later in itertools.pairwise(view.messages):
        assert all(m != message for _, m, _, _ in sink.calls[opened[later] :])


async def test_final_write_waits_for_its_slot_only_when_asked() -> None:
    for pace_final, expect_gap in ((False, False), (True, True)):
        sink = Sink()
        view = renderer(sink, pacer=EditPacer(0.3), pace_final=pace_final)
        await view.render(stream(["Hello", " world"], 0.05))
        assert [c[2] for c in sink.calls] == ["Hello", "Hello world"]
        gap = sink.calls[1][3] - sink.calls[0][3]
        assert (gap >= 0.28) is expect_gap, (pace_final, gap)


async def test_placeholder_is_replaced_and_a_blank_answer_shows_the_empty_text() -> None:
    sink = Sink()
    shown = await renderer(sink, placeholder="thinking", empty="(no answer)").render(
        stream(["  ", "\n"])
    )
    assert shown == "(no answer)"
    assert [c[:3] for c in sink.calls] == [("post", 1, "thinking"), ("update", 1, "(no answer)")]


async def test_blank_answer_without_placeholder_writes_nothing() -> None:
    sink = Sink()
    await renderer(sink).render(stream([" ", "\n\n"]))
    assert sink.calls == []


def test_a_placeholder_needs_an_empty_text() -> None:
    with pytest.raises(ValueError):
        renderer(Sink(), placeholder="thinking")


async def test_a_blank_frozen_piece_keeps_its_place_or_is_skipped() -> None:
    text = "a" * 10 + " " * 10 + "b" * 5
    for blank, expect in (("\u200b", ["a" * 10, "\u200b", "b" * 5]), (None, ["a" * 10, "b" * 5])):
        sink = Sink()
        view = renderer(sink, split=split_at(10), blank_piece=blank)
        await view.render(stream([text]))
        assert [sink.messages[m] for m in view.messages] == expect


async def test_a_lost_message_is_posted_again() -> None:
    sink = Sink()
    view = renderer(sink)

    async def parts() -> AsyncIterator[str]:
        yield "Part one. "
        await asyncio.sleep(0.05)
        sink.lost.add(1)
        yield "Part two."

    await view.render(parts())
    assert view.messages == [1, 2]
    assert sink.messages[2] == "Part one. Part two."


async def test_a_sink_error_ends_writing_but_the_stream_is_read_to_its_end() -> None:
    sink = Sink()
    sink.fail_after = 1  # the first post works, the next write fails
    read: list[str] = []

    async def parts() -> AsyncIterator[str]:
        for part in ("one ", "two ", "three"):
            read.append(part)
            yield part
            await asyncio.sleep(0.03)

    with pytest.raises(RuntimeError, match="said no"):
        await renderer(sink).render(parts())
    assert read == ["one ", "two ", "three"]
    assert len(sink.calls) == 1


async def test_cancelling_the_render_stops_the_writer() -> None:
    sink = Sink()
    view = renderer(sink, pacer=EditPacer(0.05))
    gate = asyncio.Event()

    async def parts() -> AsyncIterator[str]:
        yield "first"
        await gate.wait()
        yield "never"

    task = asyncio.create_task(view.render(parts()))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert [c[2] for c in sink.calls] == ["first"]
    assert all(t.done() for t in asyncio.all_tasks() if t is not asyncio.current_task())


def test_pacer_hands_out_one_slot_per_interval_per_key() -> None:
    now = [100.0]
    pacer = EditPacer(1.2, clock=lambda: now[0])
    assert pacer.reserve("a/1", "a") == 0
    assert abs(pacer.reserve("a/1", "a") - 1.2) < 1e-9
    assert abs(pacer.reserve("a/2", "a") - 2.4) < 1e-9  # shares "a"
    assert pacer.reserve("b/1", "b") == 0  # its own budget
    now[0] += 10
    assert pacer.reserve("a/1", "a") == 0
    now[0] += 0.5
    pacer.mark("a/1", "a")  # a slow write just ended: the next slot is after it
    assert abs(pacer.reserve("a/1", "a") - 1.2) < 1e-9


def test_pacer_refuses_a_negative_interval() -> None:
    with pytest.raises(ValueError):
        EditPacer(-1)


async def test_a_retraction_leaves_only_its_text_in_the_message() -> None:
    sink = Sink()
    notice = "Sorry, I can't send that answer."
    parts = ["Here ", "is ", "what ", "you ", "asked: ", Retraction(notice)]
    shown = await renderer(sink, pacer=EditPacer(0.02)).render(stream(parts, 0.03))
    assert shown == notice
    # The words were shown first, then taken back: one message, the notice alone.
    assert any(text.startswith("Here is") for _, _, text, _ in sink.calls)
    assert sink.messages == {1: notice}


async def test_a_retraction_takes_back_frozen_messages_and_the_placeholder() -> None:
    sink = Sink()
    parts = ["0123456789", "abcdefghij", "klm", Retraction("Withheld.")]
    shown = await renderer(
        sink, split=split_at(10), placeholder="…thinking", empty="(nothing)"
    ).render(stream(parts, 0.01))
    assert shown == "Withheld."
    # The placeholder's message holds the notice; the later ones are emptied.
    assert sink.messages[1] == "Withheld."
    assert set(list(sink.messages.values())[1:]) == {RETRACTED}


async def test_a_retraction_before_anything_was_shown_is_just_the_text() -> None:
    sink = Sink()
    shown = await renderer(sink).render(stream([Retraction("Withheld.")]))
    assert shown == "Withheld." and sink.messages == {1: "Withheld."}
