"""transformers' own continuous batching (``generate_batch``) against Deskmate's scheduler.

    python bench/llm_generate_batch.py [--concurrency 8 16] [--rounds 2]

The same N support questions (``bench/llm_throughput.py``'s prompts: Deskmate's
system prompt and one question each; greedy, repetition penalty 1.15, 48 new
tokens) are answered by:

* ``generate_batch``: ``model.generate_batch`` on a model loaded with
  ``attn_implementation="paged|sdpa"`` (transformers' paged-attention
  continuous-batching manager), all N requests handed over at once;
* ``scheduler``: ``llm.TransformersBackend`` with N concurrent streams.

Both use the dtype ``auto`` resolves to on this machine, in one process,
rounds interleaved. Prints aggregate completion tokens per second (median of
the rounds) for each.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.llm_throughput import _messages, _round_batched
from llm.base import SamplingParams
from llm.transformers import TransformersBackend


def _paged_round(model: object, tokenizer: object, config: object, count: int) -> tuple[int, float]:
    prompts = [
        tokenizer.apply_chat_template(  # type: ignore[attr-defined]
            [{"role": m.role, "content": m.content} for m in _messages(i)],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
        for i in range(count)
    ]
    started = time.perf_counter()
    outputs = model.generate_batch(  # type: ignore[attr-defined]
        inputs=[list(p) for p in prompts], generation_config=config, progress_bar=False
    )
    wall = time.perf_counter() - started
    tokens = sum(len(out.generated_tokens) for out in outputs.values())
    return tokens, wall


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    backend = TransformersBackend(
        data_dir=args.data_dir,
        max_batch_size=max(args.concurrency),
        max_queue=max(args.concurrency),
    )
    await backend.load()
    info = backend.loaded_info
    dtype = getattr(torch, str(info["dtype"]))
    model_dir = str(info["model_dir"])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=dtype, attn_implementation="paged|sdpa"
    ).eval()
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        do_sample=False,
        repetition_penalty=1.15,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    sampling = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=0.0, repetition_penalty=1.15
    )
    print(f"dtype {info['dtype']}, torch threads {torch.get_num_threads()}")
    # One untimed pass each: first calls compile kernels and allocate caches.
    await asyncio.to_thread(_paged_round, model, tokenizer, config, 2)
    await _round_batched(backend, 2, sampling)

    print("| concurrent | generate_batch tok/s | scheduler tok/s | ratio |")
    print("|---:|---:|---:|---:|")
    for count in args.concurrency:
        paged: list[float] = []
        ours: list[float] = []
        for _ in range(args.rounds):
            tokens, wall = await asyncio.to_thread(_paged_round, model, tokenizer, config, count)
            paged.append(tokens / wall)
            ours.append((await _round_batched(backend, count, sampling)).tok_per_s)
        a, b = statistics.median(paged), statistics.median(ours)
        print(f"| {count} | {a:.1f} | {b:.1f} | {b / a:.2f}x |", flush=True)
    await backend.aclose()


if __name__ == "__main__":
    asyncio.run(main())
