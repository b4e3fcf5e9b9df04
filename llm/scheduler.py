"""Continuous batching of concurrent conversations onto one model.

One dedicated thread owns the model. It loops over *step boundaries*: at each
one, sequences that finished, were cancelled or ran out of time leave the
batch, waiting requests join it (their prompt is prefilled and yields their
first token), then one decode step produces the next token of every sequence
in the batch. A request that arrives while the model is busy therefore waits
at most one step, not until the whole batch is done, and each request still
gets its own stream of text.

The scheduler knows nothing about tensors: the model work is behind the
``StepEngine`` protocol (``llm.transformers.engine`` implements it with
torch). The event loop never runs model code; it only waits on per-request
queues that the thread fills through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from llm.base import (
    ChatMessage,
    GenerationRequest,
    LLMBusy,
    LLMError,
    LLMTimeout,
    SamplingParams,
    TextDelta,
    Usage,
)

log = logging.getLogger(__name__)

# Emitted by the tokenizer for a byte sequence that is not yet valid UTF-8;
# seen mid-character when a multi-byte character spans several tokens.
_INCOMPLETE = "\ufffd"


class StepEngine(Protocol):
    """The model work the scheduler drives.

    Every method is called from the scheduler's thread only, one call at a
    time, so implementations need no locking. ``add`` and ``remove`` change the
    set of sequences in the running batch; ``step`` advances all of them.
    """

    eos_token_ids: frozenset[int]

    def encode_chat(self, messages: Sequence[ChatMessage]) -> Prompt:
        """The prompt for ``messages`` as token ids, chat template applied."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids``, special tokens left out."""
        ...

    def add(self, entries: Sequence[NewSequence]) -> dict[int, int]:
        """Prefill the prompts and put the sequences in the batch: ``{seq_id: first token}``.

        The engine may prefill them together. On failure the batch must be
        left as it was (the scheduler then retries them one by one).
        """
        ...

    def step(self) -> dict[int, int]:
        """Decode one token for every sequence in the batch: ``{seq_id: token}``."""
        ...

    def remove(self, seq_ids: Collection[int]) -> None:
        """Drop sequences from the batch and free what they held. Unknown ids are ignored."""
        ...


@dataclass(frozen=True, slots=True)
class Prompt:
    """A prompt's token ids, and how many of the first ones other prompts share.

    Conversations of one deployment start with the same system message; an
    engine can compute that prefix once and reuse it. ``shared_prefix`` is 0
    when no clean token boundary separates it from the rest.
    """

    ids: list[int]
    shared_prefix: int = 0


@dataclass(frozen=True, slots=True)
class NewSequence:
    """A request about to join the batch: its id, prompt token ids and sampling.

    The first ``shared_prefix`` ids of ``prompt`` are shared with other
    prompts (see ``Prompt``).
    """

    seq_id: int
    prompt: Sequence[int]
    sampling: SamplingParams
    shared_prefix: int = 0


@dataclass(eq=False, slots=True)
class _Sequence:
    id: int
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[TextDelta | BaseException]
    deadline: float | None  # time.monotonic() based; None = no limit
    submitted: float
    cancelled: bool = False  # set by the consumer's side, read by the thread
    prompt: list[int] = field(default_factory=list)
    shared_prefix: int = 0
    generated: list[int] = field(default_factory=list)
    max_new_tokens: int = 0
    # Incremental detokenization: text is emitted once the tokens decode to
    # complete characters (see ``_Detokenizer``).
    prefix_offset: int = 0
    read_offset: int = 0


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    running: int
    waiting: int
    steps: int
    completed: int


class BatchScheduler:
    """Runs a ``StepEngine`` in one thread, batching concurrent requests.

    ``max_batch_size`` sequences decode together; up to ``max_queue`` more
    wait for a slot, and beyond that ``stream`` raises ``LLMBusy``.
    ``prefill_budget`` caps how many prompt tokens are prefilled at one step
    boundary (at least one request is always admitted; a shared prefix the
    engine caches does not count), so a burst of long prompts does not stall
    the streams already running for long.
    """

    def __init__(
        self,
        engine: StepEngine,
        *,
        context_window: int,
        max_batch_size: int = 8,
        max_queue: int = 64,
        prefill_budget: int = 2048,
        name: str = "llm",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_queue < 0:
            raise ValueError("max_queue must not be negative")
        self._engine = engine
        self._context_window = context_window
        self._max_batch = max_batch_size
        self._max_queue = max_queue
        self._prefill_budget = prefill_budget
        self._name = name
        self._cond = threading.Condition()
        self._waiting: deque[_Sequence] = deque()
        self._running: dict[int, _Sequence] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._thread: threading.Thread | None = None
        self._steps = 0
        self._completed = 0
        # Items for consumers, posted by the thread and flushed at step boundaries.
        self._outbox: list[tuple[_Sequence, TextDelta | BaseException]] = []

    # -- event-loop side -------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name=f"deskmate-{self._name}-scheduler", daemon=True
        )
        self._thread.start()

    async def aclose(self) -> None:
        """Stop the thread; requests still queued or running fail with ``LLMError``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join)
        with self._cond:
            leftovers = [*self._waiting, *self._running.values()]
            self._waiting.clear()
            self._running.clear()
        for seq in leftovers:
            self._post(seq, LLMError("the model backend was shut down"))
        self._flush()

    def stats(self) -> SchedulerStats:
        with self._cond:
            return SchedulerStats(
                running=len(self._running),
                waiting=len(self._waiting),
                steps=self._steps,
                completed=self._completed,
            )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TextDelta]:
        """Queue ``request`` and yield its text as the thread produces it.

        Raises ``LLMBusy`` when the queue is full, ``LLMTimeout`` past
        ``request.timeout`` (counted from submission, queueing included).
        Closing or cancelling the consumer frees the slot at the next step.
        """
        seq = self._submit(request)
        loop_deadline = None
        if request.timeout is not None:
            loop_deadline = seq.loop.time() + request.timeout
        try:
            while True:
                try:
                    async with asyncio.timeout_at(loop_deadline):
                        item = await seq.queue.get()
                except TimeoutError:
                    raise LLMTimeout(
                        f"generation did not finish within {request.timeout}s"
                    ) from None
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.usage is not None:
                    return
        finally:
            self._abandon(seq)

    def _submit(self, request: GenerationRequest) -> _Sequence:
        if self._closed:
            raise LLMError("the model backend is shut down")
        if self._thread is None:
            raise LLMError("the model backend is not loaded (call load() first)")
        now = time.monotonic()
        seq = _Sequence(
            id=next(self._ids),
            request=request,
            loop=asyncio.get_running_loop(),
            queue=asyncio.Queue(),
            deadline=None if request.timeout is None else now + request.timeout,
            submitted=now,
        )
        with self._cond:
            if self._closed:
                raise LLMError("the model backend is shut down")
            free_slots = max(0, self._max_batch - len(self._running))
            ahead = len(self._waiting) - free_slots
            if ahead >= self._max_queue:
                raise LLMBusy(
                    f"{len(self._running)} running and {len(self._waiting)} waiting; "
                    f"queue limit is {self._max_queue}",
                    position=ahead + 1,
                )
            self._waiting.append(seq)
            self._cond.notify()
        return seq

    def _abandon(self, seq: _Sequence) -> None:
        # Runs on the loop whether the stream ended, failed or was cancelled; a
        # sequence that already finished is simply no longer in the batch.
        with self._cond:
            seq.cancelled = True
            self._cond.notify()

    # -- scheduler thread ------------------------------------------------------------------

    def _run(self) -> None:
        log.debug("%s scheduler thread started", self._name)
        try:
            while True:
                with self._cond:
                    while not self._closed and not self._waiting and not self._running:
                        self._cond.wait()
                    if self._closed:
                        return
                    admitted = self._take_waiting()
                try:
                    self._iteration(admitted)
                except Exception as exc:
                    # A bug here must not kill the thread: every later request would hang.
                    log.exception("scheduler iteration failed; failing the running requests")
                    self._fail_all_running(admitted, exc)
                self._flush()
        finally:
            with self._cond:
                ids = list(self._running)
            if ids:
                with contextlib.suppress(Exception):
                    self._engine.remove(ids)
            log.debug("%s scheduler thread stopped", self._name)

    def _iteration(self, admitted: Sequence[_Sequence]) -> None:
        self._retire_abandoned()
        if admitted:
            self._admit(admitted)
            # Right away, not after the next step: these are first tokens.
            self._flush()
        if self._running:
            self._decode_step()

    def _fail_all_running(self, admitted: Sequence[_Sequence], exc: Exception) -> None:
        with self._cond:
            failed = {seq.id: seq for seq in (*admitted, *self._running.values())}
        self._drop(list(failed))
        for seq in failed.values():
            self._post(seq, LLMError(f"the scheduler failed: {exc!r}"))

    def _take_waiting(self) -> list[_Sequence]:
        """Pop the requests that may join the batch at this boundary (lock held)."""
        now = time.monotonic()
        taken: list[_Sequence] = []
        free = self._max_batch - len(self._running)
        while self._waiting and len(taken) < free:
            seq = self._waiting.popleft()
            if seq.cancelled:
                continue
            if seq.deadline is not None and now >= seq.deadline:
                self._post(seq, _timeout(seq))
                continue
            taken.append(seq)
        return taken

    def _requeue(self, seqs: Sequence[_Sequence]) -> None:
        with self._cond:
            self._waiting.extendleft(reversed(seqs))

    def _admit(self, seqs: Sequence[_Sequence]) -> None:
        """Prefill newcomers; they join the batch and get their first token.

        Prompts are encoded first; once ``prefill_budget`` prompt tokens are
        taken, the rest go back to the head of the queue for the next boundary.
        """
        ready: list[_Sequence] = []
        budget = self._prefill_budget
        for index, seq in enumerate(seqs):
            if seq.cancelled:
                continue
            if ready and budget <= 0:
                self._requeue(seqs[index:])
                break
            try:
                encoded = self._engine.encode_chat(seq.request.messages)
                seq.prompt, seq.shared_prefix = encoded.ids, encoded.shared_prefix
            except Exception as exc:
                log.exception("encoding the prompt failed for request %s", _label(seq))
                self._post(seq, LLMError(f"could not encode the prompt: {exc!r}"))
                continue
            room = self._context_window - len(seq.prompt)
            if room < 1:
                self._post(
                    seq,
                    LLMError(
                        f"prompt of {len(seq.prompt)} tokens does not fit the context window "
                        f"of {self._context_window} tokens"
                    ),
                )
                continue
            seq.max_new_tokens = min(seq.request.sampling.max_new_tokens, room)
            # Only what is computed counts: the shared prefix comes from the
            # engine's cache. Counting it would split a burst of conversations
            # into several prefill passes, each newcomer of a later pass waiting
            # for the earlier ones and a decode step.
            budget -= len(seq.prompt) - seq.shared_prefix
            ready.append(seq)
        if not ready:
            return
        try:
            firsts = self._engine.add(
                [NewSequence(s.id, s.prompt, s.request.sampling, s.shared_prefix) for s in ready]
            )
        except Exception as exc:
            if len(ready) > 1:
                # Find the one that fails (a prompt too big for memory, say) and
                # let the others through.
                log.warning("batched prefill failed (%r); prefilling one by one", exc)
                for seq in ready:
                    self._admit_one(seq)
                return
            self._fail_prefill(ready[0], exc)
            return
        self._joined(ready, firsts)

    def _admit_one(self, seq: _Sequence) -> None:
        try:
            firsts = self._engine.add(
                [NewSequence(seq.id, seq.prompt, seq.request.sampling, seq.shared_prefix)]
            )
        except Exception as exc:
            self._fail_prefill(seq, exc)
            return
        self._joined([seq], firsts)

    def _fail_prefill(self, seq: _Sequence, exc: Exception) -> None:
        if isinstance(exc, LLMError):
            self._post(seq, exc)
            return
        log.error("prefill failed for request %s: %r", _label(seq), exc, exc_info=exc)
        self._post(seq, LLMError(f"prefill failed: {exc!r}"))

    def _joined(self, seqs: Sequence[_Sequence], firsts: dict[int, int]) -> None:
        with self._cond:
            for seq in seqs:
                self._running[seq.id] = seq
            running = len(self._running)
        now = time.monotonic()
        done: list[_Sequence] = []
        for seq in seqs:
            log.debug(
                "request %s joined the batch (%d prompt tokens, %d running, waited %.3f s)",
                _label(seq),
                len(seq.prompt),
                running,
                now - seq.submitted,
            )
            if self._accept(seq, firsts[seq.id]):
                done.append(seq)
        if done:
            self._finish(done)

    def _decode_step(self) -> None:
        try:
            tokens = self._engine.step()
        except Exception as exc:
            log.exception("decode step failed; failing the %d running requests", len(self._running))
            with self._cond:
                failed = list(self._running.values())
            self._drop([s.id for s in failed])
            for seq in failed:
                self._post(seq, LLMError(f"decode step failed: {exc!r}"))
            return
        self._steps += 1
        done: list[_Sequence] = []
        for seq_id, token in tokens.items():
            seq = self._running.get(seq_id)
            if seq is not None and self._accept(seq, token):
                done.append(seq)
        if done:
            self._finish(done)

    def _accept(self, seq: _Sequence, token: int) -> bool:
        """Record one new token, stream its text; True when the sequence is done."""
        eos = token in self._engine.eos_token_ids
        if not eos:
            seq.generated.append(token)
        finished = eos or len(seq.generated) >= seq.max_new_tokens
        text = self._detokenize(seq, final=finished)
        if finished:
            usage = Usage(
                prompt_tokens=len(seq.prompt),
                completion_tokens=len(seq.generated) + (1 if eos else 0),
            )
            self._post(seq, TextDelta(text, usage=usage))
        elif text:
            self._post(seq, TextDelta(text))
        return finished

    def _detokenize(self, seq: _Sequence, *, final: bool) -> str:
        # Decoding a window of recent tokens rather than one token at a time keeps
        # the spaces and merges a tokenizer applies between tokens, and holding
        # text back while it ends in an incomplete character avoids emitting "\ufffd".
        ids = seq.generated
        if seq.read_offset >= len(ids):
            return ""
        prefix = self._engine.decode(ids[seq.prefix_offset : seq.read_offset])
        full = self._engine.decode(ids[seq.prefix_offset :])
        if len(full) > len(prefix) and (final or not full.endswith(_INCOMPLETE)):
            seq.prefix_offset = seq.read_offset
            seq.read_offset = len(ids)
            text = full[len(prefix) :]
            # An answer cut by its token budget inside a character never gets the
            # character's other bytes: drop the stub rather than show "\ufffd".
            return text.rstrip(_INCOMPLETE) if final else text
        return ""

    def _finish(self, done: Sequence[_Sequence]) -> None:
        self._drop([s.id for s in done])
        with self._cond:
            self._completed += len(done)

    def _retire_abandoned(self) -> None:
        now = time.monotonic()
        with self._cond:
            running = list(self._running.values())
        gone = [s for s in running if s.cancelled]
        late = [
            s for s in running if not s.cancelled and s.deadline is not None and now >= s.deadline
        ]
        if gone or late:
            self._drop([s.id for s in (*gone, *late)])
        for seq in late:
            self._post(seq, _timeout(seq))

    def _drop(self, ids: Sequence[int]) -> None:
        with self._cond:
            for seq_id in ids:
                self._running.pop(seq_id, None)
        try:
            self._engine.remove(ids)
        except Exception:
            log.exception("freeing %d sequences failed", len(ids))

    def _post(self, seq: _Sequence, item: TextDelta | BaseException) -> None:
        self._outbox.append((seq, item))

    def _flush(self) -> None:
        """Hand the items posted since the last flush to their event loops.

        One wake-up per loop and step rather than one per sequence: on a
        machine with as many cores as torch threads, every extra wake-up of the
        loop's thread steals a core from the model's matrix products.
        """
        if not self._outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, TextDelta | BaseException]]]
        by_loop = {}
        for seq, item in self._outbox:
            by_loop.setdefault(seq.loop, []).append((seq, item))
        self._outbox = []
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:
                # That event loop is closed: nobody will read these streams.
                for seq, _ in items:
                    seq.cancelled = True


def _deliver(items: list[tuple[_Sequence, TextDelta | BaseException]]) -> None:
    for seq, item in items:
        seq.queue.put_nowait(item)


def _label(seq: _Sequence) -> str:
    return seq.request.tag or str(seq.id)


def _timeout(seq: _Sequence) -> LLMTimeout:
    return LLMTimeout(f"generation did not finish within {seq.request.timeout}s")
