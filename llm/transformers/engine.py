"""The step engine: one transformers causal LM decoding a batch of sequences.

``llm.scheduler`` decides who joins and leaves the batch; this module does the
tensor work it asks for (prefill newcomers, decode one step, drop rows) and
scores continuations for the re-ranker. It runs on the scheduler's thread,
apart from ``loglikelihoods``, which runs on a worker thread of its own.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llm.base import ChatMessage
from llm.errors import ModelConfigError
from llm.scheduler import NewSequence, Prompt
from llm.transformers.fast_step import FAST_THREADS
from llm.transformers.kv_cache import growing_layer_class
from llm.transformers.sizing import ThreadTuner

if TYPE_CHECKING:
    import torch

    from llm.transformers.fast_step import FastDecoder

# Shorter system prompts are not worth a cache entry and a separate prefill chunk.
_MIN_SHARED_PREFIX = 16
_PREFIX_CACHE_ENTRIES = 8


class TorchEngine:
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

    def __init__(
        self, model: Any, tokenizer: Any, *, device: str, tuner: ThreadTuner | None = None
    ) -> None:
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
        # None: torch's thread count stays as loading set it.
        self._tuner = tuner
        # The packed decode step (``llm.transformers.fast_step``), once built; it
        # is set from another thread, and a step reads it once.
        self._fast: FastDecoder | None = None
        self._fast_rows = 0
        self._threads = int(torch.get_num_threads())

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

    def use_fast_step(self, decoder: FastDecoder | None, *, max_rows: int) -> None:
        """Decode batches of up to ``max_rows`` unpadded rows with ``decoder`` (None: never)."""
        self._fast_rows = max_rows
        self._fast = decoder

    @property
    def batch_size(self) -> int:
        return 0 if self._rows is None else len(self._rows.seq_ids)

    def encode_chat(self, messages: Sequence[ChatMessage]) -> Prompt:
        """The prompt's ids; the shared part runs through the next message's role marker.

        Every conversation of a deployment opens with the same system message
        and then a message of the same role, so the template's opening of that
        message (``<|im_start|>user\\n``: 3 of the ~25 tokens a short question
        computes) is shared too. It is found as the common start of the prompt
        and of the same conversation with that message empty: whatever the
        template and the tokenizer do at the boundary, only tokens that are
        really the prompt's are shared (and the prefix cache is keyed by them).
        """
        ids = self._render(messages, add_generation_prompt=True)
        if len(messages) > 1 and messages[0].role == "system":
            opening = [messages[0], ChatMessage(messages[1].role, "")]
            head = self._render(opening, add_generation_prompt=False)
            shared = _common_start(ids, head)
            if 0 < shared < len(ids):
                return Prompt(ids, shared_prefix=shared)
        return Prompt(ids)

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
        computed = sum(len(entry.prompt) - entry.shared_prefix for entry in entries)
        threads = self._pick_threads("prefill", computed)
        started = time.perf_counter()
        firsts = self._add(entries)
        self._measured("prefill", computed, threads, started)
        return firsts

    def _add(self, entries: Sequence[NewSequence]) -> dict[int, int]:
        torch = self._torch
        with torch.inference_mode():
            groups: dict[tuple[int, ...] | None, list[NewSequence]] = {}
            for entry in entries:
                shared = entry.shared_prefix
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
        count = len(rows.seq_ids)
        fast = self._fast
        if fast is not None and (self._padded or count > self._fast_rows):
            fast = None
        kind = "decode" if fast is None else "fast-decode"
        threads = self._pick_threads(kind, count)
        started = time.perf_counter()
        tokens = self._step(rows, count, fast)
        self._measured(kind, count, threads, started)
        return tokens

    def _step(self, rows: _Rows, count: int, fast: FastDecoder | None) -> dict[int, int]:
        torch = self._torch
        with torch.inference_mode():
            rows.mask = torch.cat(
                [rows.mask, torch.ones(count, 1, dtype=rows.mask.dtype, device=self._device)], 1
            )
            if fast is not None:
                logits = fast.logits(rows.last, rows.pos, self._cache)
            else:
                out = self._model(
                    input_ids=rows.last[:, None],
                    # Without padding the plain causal path is exact and cheaper.
                    attention_mask=rows.mask if self._padded else None,
                    position_ids=rows.pos[:, None],
                    past_key_values=self._cache,
                    use_cache=True,
                )
                logits = out.logits[:, -1, :]
            tokens = self._sample(logits, rows)
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

    def _pick_threads(self, kind: str, size: int) -> int:
        if self._tuner is None:
            return self._threads
        threads = FAST_THREADS if kind == "fast-decode" else self._tuner.choose(kind, size)
        if threads != self._threads:
            self._torch.set_num_threads(threads)
            self._threads = threads
        return threads

    def _measured(self, kind: str, size: int, threads: int, started: float) -> None:
        # The pass has finished here: its tokens were read back (``tolist``).
        if self._tuner is not None:
            self._tuner.record(kind, size, threads, time.perf_counter() - started)

    def _install(self, rows: _Rows) -> None:
        new_cache, layer_class = self._cache_types()
        cache = new_cache()
        for keys, values in rows.kv:
            cache.layers.append(layer_class.holding(keys, values))
        self._rows, self._cache = rows, cache
        self._padded = bool((rows.mask == 0).any())
        rows.kv = []  # the cache layers own them now (steps replace them)

    def _cache_types(self) -> tuple[Any, Any]:
        """The KV cache and cache layer classes: the model's own (``light``) or transformers'."""
        own = getattr(self._model, "cache_types", None)
        if own is not None:
            return own[0], own[1]
        from transformers import DynamicCache

        return DynamicCache, growing_layer_class()

    def _prefill(self, group: Sequence[NewSequence], prefix: tuple[int, ...]) -> _Rows:
        """Rows for newcomers sharing ``prefix`` (cached), with their suffixes prefilled.

        Suffixes are left-padded to a common length; with a non-empty prefix
        every padded query still sees the prefix, so attention stays finite.
        """
        new_cache = self._cache_types()[0]
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
            cache = new_cache(
                ddp_cache_data=[
                    (k.expand(count, -1, -1, -1), v.expand(count, -1, -1, -1))
                    for k, v in self._prefix_kv(prefix)
                ]
            )
        else:
            cache = new_cache()
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
        torch = self._torch
        cache = self._cache_types()[0]()
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


def _common_start(a: Sequence[int], b: Sequence[int]) -> int:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return min(len(a), len(b))


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
