"""The batching scheduler against a scripted byte-level engine (no model, fast)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Collection, Sequence

import pytest

from llm.base import (
    ChatMessage,
    GenerationRequest,
    LLMBusy,
    LLMError,
    LLMTimeout,
    SamplingParams,
    TextDelta,
)
from llm.scheduler import BatchScheduler, NewSequence, Prompt

EOS = 256


class ByteEngine:
    """Tokens are UTF-8 bytes; each sequence answers ``reply:<last user text>`` then EOS.

    ``gate`` (when cleared) blocks ``step`` so a test can hold the model busy;
    ``batches`` records which sequences every step decoded.
    """

    eos_token_ids = frozenset({EOS})

    def __init__(self, *, step_delay: float = 0.0, fail_on_step: int | None = None) -> None:
        self.step_delay = step_delay
        self.fail_on_step = fail_on_step
        self.gate = threading.Event()
        self.gate.set()
        self.pending: dict[int, list[int]] = {}
        self.batches: list[frozenset[int]] = []
        self.added: list[int] = []
        self.prefill_calls: list[list[int]] = []
        self.removed: list[int] = []
        self.steps = 0

    def encode_chat(self, messages: Sequence[ChatMessage]) -> Prompt:
        return Prompt(list("\n".join(m.content for m in messages).encode()))

    def decode(self, token_ids: Sequence[int]) -> str:
        return bytes(t for t in token_ids if t < 256).decode("utf-8", errors="replace")

    def add(self, entries: Sequence[NewSequence]) -> dict[int, int]:
        firsts: dict[int, int] = {}
        for entry in entries:
            last_line = bytes(entry.prompt).decode().split("\n")[-1]
            if last_line == "explode on prefill":
                raise RuntimeError("prefill blew up")
            firsts[entry.seq_id] = -1
        self.prefill_calls.append([e.seq_id for e in entries])
        for entry in entries:
            last_line = bytes(entry.prompt).decode().split("\n")[-1]
            self.pending[entry.seq_id] = [*f"reply:{last_line}".encode(), EOS]
            self.added.append(entry.seq_id)
            firsts[entry.seq_id] = self.pending[entry.seq_id].pop(0)
        return firsts

    def step(self) -> dict[int, int]:
        self.gate.wait(5)
        self.steps += 1
        if self.fail_on_step == self.steps:
            raise RuntimeError("device lost")
        if self.step_delay:
            time.sleep(self.step_delay)
        self.batches.append(frozenset(self.pending))
        return {seq_id: (toks.pop(0) if toks else EOS) for seq_id, toks in self.pending.items()}

    def remove(self, seq_ids: Collection[int]) -> None:
        for seq_id in seq_ids:
            if self.pending.pop(seq_id, None) is not None:
                self.removed.append(seq_id)


def _request(
    text: str, *, max_new_tokens: int = 200, timeout: float | None = None
) -> GenerationRequest:
    return GenerationRequest(
        messages=[ChatMessage("system", "sys"), ChatMessage("user", text)],
        sampling=SamplingParams(max_new_tokens=max_new_tokens, temperature=0),
        timeout=timeout,
    )


async def _until(condition: Callable[[], bool]) -> None:
    # Polling: the state is changed by the scheduler's thread, not by a coroutine.
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.001)


async def _collect(scheduler: BatchScheduler, request: GenerationRequest) -> list[TextDelta]:
    return [delta async for delta in scheduler.stream(request)]


def _make(engine: ByteEngine, **kwargs: int) -> BatchScheduler:
    options = {"context_window": 4096, "max_batch_size": 4, "max_queue": 4, **kwargs}
    scheduler = BatchScheduler(engine, **options)
    scheduler.start()
    return scheduler


async def test_one_request_streams_its_text_and_usage() -> None:
    scheduler = _make(ByteEngine())
    deltas = await _collect(scheduler, _request("hello"))
    await scheduler.aclose()

    assert "".join(d.text for d in deltas) == "reply:hello"
    assert len(deltas) > 3  # streamed piece by piece, not in one block
    assert all(d.usage is None for d in deltas[:-1])
    usage = deltas[-1].usage
    assert usage is not None
    assert usage.prompt_tokens == len(b"sys\nhello")
    assert usage.completion_tokens == len(b"reply:hello") + 1  # EOS counts as generated


async def test_concurrent_requests_share_steps_and_keep_their_own_text() -> None:
    engine = ByteEngine(step_delay=0.002)
    scheduler = _make(engine, max_batch_size=8)
    texts = [f"question {i} " + "x" * i for i in range(6)]
    results = await asyncio.gather(*(_collect(scheduler, _request(t)) for t in texts))
    await scheduler.aclose()

    for text, deltas in zip(texts, results, strict=True):
        assert "".join(d.text for d in deltas) == f"reply:{text}"
    assert max(len(b) for b in engine.batches) == 6
    # Far fewer steps than one-at-a-time decoding would need.
    assert engine.steps < sum(len(f"reply:{t}") + 1 for t in texts) / 3


async def test_a_late_request_joins_the_running_batch() -> None:
    engine = ByteEngine(step_delay=0.005)
    scheduler = _make(engine)
    long_request = asyncio.create_task(_collect(scheduler, _request("long " * 30)))
    await _until(lambda: engine.steps >= 5)

    late = await _collect(scheduler, _request("late"))
    assert not long_request.done()  # the late one finished while the first was still going
    assert "".join(d.text for d in late) == "reply:late"
    assert "".join(d.text for d in await long_request) == "reply:" + "long " * 30
    await scheduler.aclose()
    # They shared steps: the late sequence entered a batch that was already running.
    assert any(len(b) == 2 for b in engine.batches)
    first_shared = next(i for i, b in enumerate(engine.batches) if len(b) == 2)
    assert first_shared >= 5


async def test_full_queue_raises_busy_with_position() -> None:
    engine = ByteEngine()
    engine.gate.clear()
    scheduler = _make(engine, max_batch_size=1, max_queue=1)
    running = asyncio.create_task(_collect(scheduler, _request("a")))
    await _until(lambda: bool(engine.added))
    waiting = asyncio.create_task(_collect(scheduler, _request("b")))
    await asyncio.sleep(0.01)

    with pytest.raises(LLMBusy) as err:
        await _collect(scheduler, _request("c"))
    assert err.value.position == 2
    assert scheduler.stats().running == 1
    assert scheduler.stats().waiting == 1

    engine.gate.set()
    assert "".join(d.text for d in await running) == "reply:a"
    assert "".join(d.text for d in await waiting) == "reply:b"
    await scheduler.aclose()


async def test_cancelling_the_consumer_frees_its_slot() -> None:
    engine = ByteEngine(step_delay=0.005)
    scheduler = _make(engine, max_batch_size=1, max_queue=2)
    first_token = asyncio.Event()

    async def consume() -> None:
        async for _ in scheduler.stream(_request("never finishes " * 50)):
            first_token.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_token.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    # With one slot, this can only run once the cancelled sequence left the batch.
    started = time.monotonic()
    deltas = await _collect(scheduler, _request("next"))
    assert "".join(d.text for d in deltas) == "reply:next"
    assert time.monotonic() - started < 1.0
    assert engine.removed[0] == engine.added[0]
    await scheduler.aclose()


async def test_closing_the_stream_early_frees_its_slot() -> None:
    engine = ByteEngine(step_delay=0.002)
    scheduler = _make(engine, max_batch_size=1)
    stream = scheduler.stream(_request("long " * 50))
    await anext(stream)
    await stream.aclose()
    deltas = await _collect(scheduler, _request("after"))
    assert "".join(d.text for d in deltas) == "reply:after"
    assert engine.added[0] in engine.removed
    await scheduler.aclose()


async def test_timeout_raises_and_frees_the_slot() -> None:
    engine = ByteEngine(step_delay=0.02)
    scheduler = _make(engine, max_batch_size=1)
    received: list[str] = []
    with pytest.raises(LLMTimeout):
        async for delta in scheduler.stream(_request("slow " * 100, timeout=0.15)):
            received.append(delta.text)
    assert received  # it had started streaming before the deadline
    deltas = await _collect(scheduler, _request("quick"))
    assert "".join(d.text for d in deltas) == "reply:quick"
    assert engine.added[0] in engine.removed
    await scheduler.aclose()


async def test_timeout_while_waiting_for_a_slot() -> None:
    engine = ByteEngine()
    engine.gate.clear()
    scheduler = _make(engine, max_batch_size=1)
    blocker = asyncio.create_task(_collect(scheduler, _request("blocker")))
    await _until(lambda: bool(engine.added))
    with pytest.raises(LLMTimeout):
        await _collect(scheduler, _request("waits", timeout=0.05))
    engine.gate.set()
    await blocker
    assert len(engine.added) == 1  # the timed-out request never reached the model
    await scheduler.aclose()


async def test_max_new_tokens_caps_the_answer() -> None:
    scheduler = _make(ByteEngine())
    deltas = await _collect(scheduler, _request("hello", max_new_tokens=4))
    await scheduler.aclose()
    assert "".join(d.text for d in deltas) == "repl"
    assert deltas[-1].usage is not None
    assert deltas[-1].usage.completion_tokens == 4


async def test_answer_is_cut_at_the_context_window() -> None:
    scheduler = _make(ByteEngine(), context_window=len(b"sys\nhello") + 3)
    deltas = await _collect(scheduler, _request("hello"))
    await scheduler.aclose()
    assert "".join(d.text for d in deltas) == "rep"


async def test_prompt_longer_than_the_context_window_fails_clearly() -> None:
    scheduler = _make(ByteEngine(), context_window=8)
    with pytest.raises(LLMError, match="does not fit the context window"):
        await _collect(scheduler, _request("far too long for eight tokens"))
    await scheduler.aclose()


async def test_multibyte_characters_split_across_tokens_are_never_garbled() -> None:
    scheduler = _make(ByteEngine())
    deltas = await _collect(scheduler, _request("héllo wörld ✓"))
    await scheduler.aclose()
    assert "".join(d.text for d in deltas) == "reply:héllo wörld ✓"
    assert not any("\ufffd" in d.text for d in deltas)


async def test_an_answer_cut_inside_a_character_drops_the_unfinished_character() -> None:
    scheduler = _make(ByteEngine())
    # "reply:" is 6 bytes and 发 3: the token budget ends after the first byte of 货.
    deltas = await _collect(scheduler, _request("发货", max_new_tokens=10))
    await scheduler.aclose()
    assert "".join(d.text for d in deltas) == "reply:发"
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 10


async def test_failed_prefill_fails_only_that_request() -> None:
    engine = ByteEngine(step_delay=0.002)
    scheduler = _make(engine)
    ok = asyncio.create_task(_collect(scheduler, _request("fine")))
    with pytest.raises(LLMError, match="prefill failed"):
        await _collect(scheduler, _request("explode on prefill"))
    assert "".join(d.text for d in await ok) == "reply:fine"
    await scheduler.aclose()


async def test_failed_step_fails_the_batch_and_the_scheduler_keeps_serving() -> None:
    engine = ByteEngine(fail_on_step=3)
    scheduler = _make(engine)
    with pytest.raises(LLMError, match="device lost"):
        await _collect(scheduler, _request("doomed"))
    deltas = await _collect(scheduler, _request("survivor"))
    assert "".join(d.text for d in deltas) == "reply:survivor"
    await scheduler.aclose()


async def test_aclose_fails_waiting_requests_and_refuses_new_ones() -> None:
    engine = ByteEngine()
    engine.gate.clear()
    scheduler = _make(engine, max_batch_size=1)
    running = asyncio.create_task(_collect(scheduler, _request("a")))
    waiting = asyncio.create_task(_collect(scheduler, _request("b")))
    await _until(lambda: bool(engine.added))
    close = asyncio.create_task(scheduler.aclose())
    await asyncio.sleep(0.01)
    engine.gate.set()
    await close
    for task in (running, waiting):
        with pytest.raises(LLMError, match="shut down"):
            await task
    with pytest.raises(LLMError):
        await _collect(scheduler, _request("c"))


async def test_stream_before_start_is_an_error() -> None:
    scheduler = BatchScheduler(ByteEngine(), context_window=64)
    with pytest.raises(LLMError, match="not loaded"):
        await _collect(scheduler, _request("x"))


async def test_newcomers_are_prefilled_together_within_the_budget() -> None:
    engine = ByteEngine()
    engine.gate.clear()
    scheduler = _make(engine, max_batch_size=8)
    blocker = asyncio.create_task(_collect(scheduler, _request("first")))
    await _until(lambda: bool(engine.added))
    others = [asyncio.create_task(_collect(scheduler, _request(f"q{i}"))) for i in range(3)]
    await _until(lambda: scheduler.stats().waiting == 3)
    engine.gate.set()
    await asyncio.gather(blocker, *others)
    await scheduler.aclose()
    assert engine.prefill_calls[1] == engine.added[1:4]  # the three joined in one prefill


async def test_prefill_budget_spreads_a_burst_over_boundaries() -> None:
    engine = ByteEngine()
    engine.gate.clear()
    scheduler = BatchScheduler(engine, context_window=4096, max_batch_size=8, prefill_budget=10)
    scheduler.start()
    blocker = asyncio.create_task(_collect(scheduler, _request("first")))
    await _until(lambda: bool(engine.added))
    others = [asyncio.create_task(_collect(scheduler, _request(f"question {i}"))) for i in range(3)]
    await _until(lambda: scheduler.stats().waiting == 3)
    engine.gate.set()
    results = await asyncio.gather(blocker, *others)
    await scheduler.aclose()
    # Each prompt (14 tokens) exceeds the budget alone: one newcomer per boundary.
    assert [len(call) for call in engine.prefill_calls] == [1, 1, 1, 1]
    for i, deltas in enumerate(results[1:]):
        assert "".join(d.text for d in deltas) == f"reply:question {i}"


class SharedPrefixEngine(ByteEngine):
    """A ``ByteEngine`` whose prompts share their system message (and the newline after it)."""

    def encode_chat(self, messages: Sequence[ChatMessage]) -> Prompt:
        prompt = super().encode_chat(messages)
        return Prompt(prompt.ids, shared_prefix=len(messages[0].content.encode()) + 1)


async def test_the_budget_counts_only_what_is_not_shared() -> None:
    engine = SharedPrefixEngine()
    engine.gate.clear()
    scheduler = BatchScheduler(engine, context_window=4096, max_batch_size=8, prefill_budget=30)
    scheduler.start()
    system = ChatMessage("system", "S" * 40)

    def request(text: str) -> GenerationRequest:
        return GenerationRequest([system, ChatMessage("user", text)], sampling=SamplingParams())

    blocker = asyncio.create_task(_collect(scheduler, request("first")))
    await _until(lambda: bool(engine.added))
    others = [asyncio.create_task(_collect(scheduler, request(f"question {i}"))) for i in range(3)]
    await _until(lambda: scheduler.stats().waiting == 3)
    engine.gate.set()
    await asyncio.gather(blocker, *others)
    await scheduler.aclose()
    # 51 tokens a prompt, 10 of them its own: the three fit the budget of 30 together.
    assert [len(call) for call in engine.prefill_calls] == [1, 3]


async def test_one_bad_prompt_in_a_joint_prefill_fails_alone() -> None:
    engine = ByteEngine()
    engine.gate.clear()
    scheduler = _make(engine, max_batch_size=8)
    blocker = asyncio.create_task(_collect(scheduler, _request("first")))
    await _until(lambda: bool(engine.added))
    good = asyncio.create_task(_collect(scheduler, _request("good")))
    bad = asyncio.create_task(_collect(scheduler, _request("explode on prefill")))
    await _until(lambda: scheduler.stats().waiting == 2)
    engine.gate.set()
    assert "".join(d.text for d in await good) == "reply:good"
    with pytest.raises(LLMError, match="prefill blew up"):
        await bad
    await blocker
    await scheduler.aclose()


async def test_an_unexpected_error_fails_the_batch_but_not_the_thread() -> None:
    class BrokenDecode(ByteEngine):
        def decode(self, token_ids: Sequence[int]) -> str:
            if b"!" in bytes(t for t in token_ids if t < 256):
                raise RuntimeError("detokenizer bug")
            return super().decode(token_ids)

    scheduler = _make(BrokenDecode())
    with pytest.raises(LLMError, match="detokenizer bug"):
        await _collect(scheduler, _request("bang!"))
    deltas = await _collect(scheduler, _request("fine"))
    assert "".join(d.text for d in deltas) == "reply:fine"
    assert scheduler.stats().running == 0
    await scheduler.aclose()
