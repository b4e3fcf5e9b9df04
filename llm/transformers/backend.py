"""``TransformersBackend``: the local model behind the ``Backend`` and ``Scorer`` protocols.

Generation goes through a ``BatchScheduler`` driving a ``TorchEngine``;
scoring calls the engine directly from a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from llm.base import (
    DTYPES,
    FAST_DECODE_MODES,
    QUANTIZATIONS,
    GenerationRequest,
    LLMError,
    TextDelta,
)
from llm.errors import ModelConfigError
from llm.scheduler import BatchScheduler, SchedulerStats
from llm.transformers.engine import TorchEngine
from llm.transformers.loading import CPU_CONTEXT_CAP, LoadedModel, batch_size_for, load_model
from llm.transformers.sizing import ThreadTuner, thread_candidates, usable_cores

log = logging.getLogger(__name__)


def import_in_background() -> threading.Thread:
    """Import torch and the light model's modules on a daemon thread, now.

    ``deskmate run`` calls this first thing, so that torch's import (about 2 CPU s)
    runs beside the bot's own imports and the database check instead of starting
    with ``load()``: whenever one waits on the disk, the other runs (both hold the
    interpreter lock otherwise, so on a busy core they interleave). ``load()`` needs nothing
    from it: a module still being imported here is waited for by Python's import
    lock, and a failed import is left for ``load()`` to raise with its message.
    """

    def run() -> None:
        with contextlib.suppress(Exception):
            import tokenizers  # noqa: F401

            import llm.transformers.light  # noqa: F401

    thread = threading.Thread(target=run, name="import-torch", daemon=True)
    thread.start()
    return thread


class TransformersBackend:
    """A ``Backend`` running a causal LM in this process.

    ``load()`` reads the model in a worker thread and starts the scheduler's
    thread; ``stream()`` queues a request there. Options that cannot work
    together (a GPU that is not there, bitsandbytes without support for the
    device) raise ``ModelConfigError`` from ``load()`` with the fix in the message.

    Tuning knobs beyond the settings: ``dtype`` (``auto`` picks per device),
    ``max_context`` (default: the model's window capped at 2048 tokens on CPU,
    8192 on GPU), ``prefill_budget`` (prompt tokens prefilled per step
    boundary). ``threads`` (torch CPU threads) and ``max_batch_size``
    (sequences decoded together) are decided at load when None: see
    ``llm.transformers.sizing``. ``fast_decode`` (``auto`` or ``off``) builds
    the packed decode step of ``llm.transformers.fast_step`` in the background
    after load; the ``fast_decode`` attribute says how far it got. ``light``
    (default) runs a plain Llama in float32 on the CPU without transformers
    (``llm.transformers.light``); False loads every model through transformers.
    """

    def __init__(
        self,
        *,
        model: str = "embedded",
        quantization: str = "none",
        device: str = "auto",
        allow_quantization_fallback: bool = False,
        data_dir: Path = Path("data"),
        max_batch_size: int | None = None,
        max_queue: int = 64,
        dtype: str = "auto",
        max_context: int | None = None,
        prefill_budget: int = 2048,
        threads: int | None = None,
        fast_decode: str = "auto",
        light: bool = True,
    ) -> None:
        if quantization not in QUANTIZATIONS:
            raise ModelConfigError(
                f"DESKMATE_QUANTIZATION must be one of {', '.join(QUANTIZATIONS)}, "
                f"not {quantization!r}"
            )
        if dtype not in DTYPES:
            raise ModelConfigError(
                f"DESKMATE_DTYPE must be one of {', '.join(DTYPES)}, not {dtype!r}"
            )
        if fast_decode not in FAST_DECODE_MODES:
            raise ModelConfigError(
                f"DESKMATE_FAST_DECODE must be one of {', '.join(FAST_DECODE_MODES)}, "
                f"not {fast_decode!r}"
            )
        self._fast_mode = fast_decode
        self._light = light
        self._model_spec = model
        self._quantization = quantization
        self._device_spec = device
        self._allow_fallback = allow_quantization_fallback
        self._data_dir = Path(data_dir)
        self._max_batch = max_batch_size
        self._max_queue = max_queue
        self._dtype_spec = dtype
        self._max_context = max_context
        self._prefill_budget = prefill_budget
        self._threads = threads
        self._scheduler: BatchScheduler | None = None
        self._engine: TorchEngine | None = None
        self._counter: Any = None  # a separate Rust tokenizer for count_tokens on the event loop
        self._load_lock = asyncio.Lock()
        self.name = f"transformers:{model}"
        self.context_window = max_context or CPU_CONTEXT_CAP
        # What load() actually chose (``LoadedModel.info``), for logs and benchmarks.
        self.loaded_info: dict[str, object] = {}
        # The packed decode step: "off", "building", "ready" or "unavailable: why".
        # It is built on a thread of its own after load; until then steps run eagerly.
        self.fast_decode = "off"

    async def load(self) -> None:
        async with self._load_lock:
            if self._scheduler is not None:
                return
            engine, loaded, max_batch = await asyncio.to_thread(self._load_blocking)
            self._engine = engine
            self.name = f"transformers:{loaded.model_dir.name}"
            self.context_window = loaded.context_window
            self.loaded_info = {**loaded.info, "max_batch_size": max_batch}
            self._counter = engine.clone_rust_tokenizer()
            scheduler = BatchScheduler(
                engine,
                context_window=loaded.context_window,
                max_batch_size=max_batch,
                max_queue=self._max_queue,
                prefill_budget=self._prefill_budget,
                name="transformers",
            )
            scheduler.start()
            self._scheduler = scheduler
            if self._fast_mode == "auto":
                self.fast_decode = "building"
                threading.Thread(
                    target=self._build_fast_step,
                    args=(engine, loaded),
                    name="deskmate-fast-step",
                    daemon=True,
                ).start()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TextDelta]:
        scheduler = self._scheduler
        if scheduler is None:
            raise LLMError("the transformers backend is not loaded (call load() first)")
        async with contextlib.aclosing(scheduler.stream(request)) as deltas:
            async for delta in deltas:
                yield delta

    async def loglikelihoods(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        engine = self._engine
        if engine is None:
            raise LLMError("the transformers backend is not loaded (call load() first)")
        if not pairs:
            return []
        return await asyncio.to_thread(engine.loglikelihoods, pairs)

    def count_tokens(self, text: str) -> int:
        if self._counter is None:
            return max(1, (len(text) + 3) // 4)  # before load: the usual ~4 characters a token
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def stats(self) -> SchedulerStats | None:
        return None if self._scheduler is None else self._scheduler.stats()

    async def aclose(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            await scheduler.aclose()
        self._engine = None
        self._counter = None
        gc.collect()

    def _build_fast_step(self, engine: TorchEngine, loaded: LoadedModel) -> None:
        from llm.transformers.fast_step import FAST_MAX_ROWS, cache_file_for, try_build

        cache_file = cache_file_for(self._data_dir, loaded.model_dir)
        decoder, why = try_build(loaded.model, cache_file=cache_file)
        if decoder is None:
            self.fast_decode = f"unavailable: {why}"
            log.info("Fast decode step unavailable (%s); decoding eagerly", why)
            return
        if engine is not self._engine:  # closed meanwhile
            return
        engine.use_fast_step(decoder, max_rows=FAST_MAX_ROWS)
        self.fast_decode = "ready"
        log.info(
            "Fast decode step ready after %.1f s (batches of up to %d rows)",
            decoder.build_seconds,
            FAST_MAX_ROWS,
        )

    def _load_blocking(self) -> tuple[TorchEngine, LoadedModel, int]:
        loaded = load_model(
            self._model_spec,
            data_dir=self._data_dir,
            device=self._device_spec,
            dtype=self._dtype_spec,
            quantization=self._quantization,
            allow_quantization_fallback=self._allow_fallback,
            max_context=self._max_context,
            threads=self._threads,
            light=self._light,
        )
        max_batch = batch_size_for(loaded, self._max_batch)
        tuner = None
        if self._threads is None and loaded.device == "cpu":
            candidates = thread_candidates(usable_cores())
            if len(candidates) > 1:
                tuner = ThreadTuner(candidates)
                loaded.info["threads"] = "-".join(map(str, candidates)) + ", tuned per pass"
        log.info("Batching up to %d sequences, %s torch threads", max_batch, loaded.info["threads"])
        engine = TorchEngine(loaded.model, loaded.tokenizer, device=loaded.device, tuner=tuner)
        return engine, loaded, max_batch
