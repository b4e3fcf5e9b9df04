"""Throughput and time-to-first-token of the batching scheduler vs one-at-a-time.

Runs the embedded model (or ``--model``) and, for each concurrency level,
starts that many conversations at once, each asking one support question with
greedy decoding. Two ways of serving them are measured in the same run,
interleaved round by round so that background load hits both alike:

* ``batched``: ``TransformersBackend`` (the scheduler: continuous batching).
* ``naive``: one ``model.generate`` at a time behind a lock, streaming through
  a streamer: what a straightforward server does.

Reports, per level, the median over rounds of the aggregate tokens/s (all
completion tokens / wall time of the round) and of the p50 / p95
time-to-first-token, plus the ratio batched / naive.

    python bench/llm_throughput.py                      # 1 4 8 16, 3 rounds
    python bench/llm_throughput.py --concurrency 8 --rounds 5 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.settings import DEFAULT_SYSTEM_PROMPT
from llm.base import ChatMessage, GenerationRequest, SamplingParams
from llm.transformers import TransformersBackend

QUESTIONS = [
    "How do I reset my password?",
    "What are your opening hours on weekends?",
    "My order has not arrived after two weeks. What can I do?",
    "Can I change the delivery address of an order I already placed?",
    "Do you offer refunds for digital products?",
    "How can I contact a human agent?",
    "Is there a student discount?",
    "The app crashes when I open the settings page on my phone. Any idea why?",
    "How do I cancel my subscription?",
    "Which payment methods do you accept?",
    "Can I use my account on two devices at the same time?",
    "Where can I download my invoices?",
    "How long does shipping to Canada take?",
    "I was charged twice for the same order. Please help.",
    "How do I enable two-factor authentication?",
    "What is your return policy for damaged items?",
]


@dataclass(frozen=True, slots=True)
class RoundResult:
    mode: str
    concurrency: int
    tokens: int
    wall_s: float
    ttft_s: list[float]

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.wall_s


def _messages(i: int) -> list[ChatMessage]:
    return [
        ChatMessage("system", DEFAULT_SYSTEM_PROMPT),
        ChatMessage("user", QUESTIONS[i % len(QUESTIONS)]),
    ]


async def _round_batched(
    backend: TransformersBackend, concurrency: int, sampling: SamplingParams
) -> RoundResult:
    async def one(i: int) -> tuple[float, int]:
        started = time.perf_counter()
        first: float | None = None
        tokens = 0
        request = GenerationRequest(_messages(i), sampling=sampling)
        async for delta in backend.stream(request):
            if first is None and delta.text:
                first = time.perf_counter() - started
            if delta.usage is not None:
                tokens = delta.usage.completion_tokens
        return (first if first is not None else time.perf_counter() - started), tokens

    started = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(concurrency)))
    wall = time.perf_counter() - started
    return RoundResult(
        "batched", concurrency, sum(t for _, t in results), wall, [f for f, _ in results]
    )


class NaiveServer:
    """One ``generate`` call at a time in a worker thread, streamed token by token."""

    def __init__(
        self, model_dir: str, dtype: str, quantization: str, sampling: SamplingParams
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype), "attn_implementation": "sdpa"}
        if quantization == "4bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=getattr(torch, dtype),
            )
        elif quantization == "8bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs).eval()
        self.sampling = sampling
        self._lock = threading.Lock()

    def generate(self, messages: Sequence[ChatMessage], on_token: Any) -> int:
        from transformers.generation.streamers import BaseStreamer

        class Counter(BaseStreamer):
            def __init__(self) -> None:
                self.calls = 0

            def put(self, value: Any) -> None:
                self.calls += 1
                if self.calls > 1:  # the first call carries the prompt
                    on_token()

            def end(self) -> None:
                pass

        ids = self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"]
        counter = Counter()
        with self._lock, self._torch.inference_mode():
            out = self.model.generate(
                ids,
                attention_mask=self._torch.ones_like(ids),
                max_new_tokens=self.sampling.max_new_tokens,
                do_sample=False,
                repetition_penalty=self.sampling.repetition_penalty,
                streamer=counter,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        return int(out.shape[1] - ids.shape[1])


async def _round_naive(server: NaiveServer, concurrency: int) -> RoundResult:
    loop = asyncio.get_running_loop()

    async def one(i: int) -> tuple[float, int]:
        started = time.perf_counter()
        first: list[float] = []

        def on_token() -> None:
            if not first:
                first.append(time.perf_counter() - started)

        tokens = await loop.run_in_executor(None, server.generate, _messages(i), on_token)
        return (first[0] if first else time.perf_counter() - started), tokens

    started = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(concurrency)))
    wall = time.perf_counter() - started
    return RoundResult(
        "naive", concurrency, sum(t for _, t in results), wall, [f for f, _ in results]
    )


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _summary(results: list[RoundResult]) -> dict[str, float]:
    return {
        "tok_per_s": statistics.median(r.tok_per_s for r in results),
        "ttft_p50_s": statistics.median(_percentile(r.ttft_s, 0.5) for r in results),
        "ttft_p95_s": statistics.median(_percentile(r.ttft_s, 0.95) for r in results),
        "tokens": statistics.median(r.tokens for r in results),
        "wall_s": statistics.median(r.wall_s for r in results),
    }


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--quantization", default="none", choices=["none", "8bit", "4bit"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the backend's)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    sampling = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=0.0, repetition_penalty=1.15
    )
    backend = TransformersBackend(
        model=args.model,
        data_dir=args.data_dir,
        dtype=args.dtype,
        quantization=args.quantization,
        threads=args.threads,
        max_batch_size=max(args.concurrency),
        max_queue=max(args.concurrency),
    )
    started = time.perf_counter()
    await backend.load()
    info = backend.loaded_info
    print(f"loaded {backend.name} in {time.perf_counter() - started:.1f} s: {info}", flush=True)
    naive = None
    if not args.skip_naive:
        naive = NaiveServer(
            str(info["model_dir"]), str(info["dtype"]), str(info["quantization"]), sampling
        )

    # Warm up both paths (first calls allocate and pick kernels).
    await _round_batched(backend, 2, SamplingParams(max_new_tokens=4, temperature=0))
    if naive is not None:
        await _round_naive(naive, 1)

    results: dict[tuple[str, int], list[RoundResult]] = {}
    for round_no in range(1, args.rounds + 1):
        for concurrency in args.concurrency:
            runs = [("batched", _round_batched(backend, concurrency, sampling))]
            if naive is not None:
                runs.append(("naive", _round_naive(naive, concurrency)))
            # Alternate which goes first, so neither always runs on a warmer machine.
            if round_no % 2 == 0:
                runs.reverse()
            for mode, coro in runs:
                result = await coro
                results.setdefault((mode, concurrency), []).append(result)
                print(
                    f"round {round_no} {mode:7} x{concurrency:<2} {result.tok_per_s:6.1f} tok/s "
                    f"ttft p50 {_percentile(result.ttft_s, 0.5):5.2f} s "
                    f"p95 {_percentile(result.ttft_s, 0.95):5.2f} s "
                    f"({result.tokens} tokens in {result.wall_s:.1f} s)",
                    flush=True,
                )
    await backend.aclose()

    report: dict[str, Any] = {
        "model": backend.name,
        "loaded": info,
        "args": vars(args)
        | {"data_dir": str(args.data_dir), "json": str(args.json) if args.json else None},
        "levels": [],
    }
    print()
    print(
        "| conc. | batched tok/s | naive tok/s | ratio "
        "| batched TTFT p50 / p95 | naive TTFT p50 / p95 |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for concurrency in args.concurrency:
        b = _summary(results[("batched", concurrency)])
        n = _summary(results[("naive", concurrency)]) if naive is not None else None
        ratio = b["tok_per_s"] / n["tok_per_s"] if n else float("nan")
        report["levels"].append(
            {"concurrency": concurrency, "batched": b, "naive": n, "ratio": ratio}
        )
        naive_cols = f"{n['tok_per_s']:.1f} | {ratio:.2f}x | " if n else "- | - | "
        naive_ttft = f"{n['ttft_p50_s']:.2f} / {n['ttft_p95_s']:.2f} s" if n else "-"
        print(
            f"| {concurrency} | {b['tok_per_s']:.1f} | {naive_cols}"
            f"{b['ttft_p50_s']:.2f} / {b['ttft_p95_s']:.2f} s | {naive_ttft} |"
        )
    report["raw"] = [asdict(r) for rs in results.values() for r in rs]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
