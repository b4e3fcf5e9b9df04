"""How far batched greedy answers drift from the same requests served alone.

In float32 every request gets exactly its solo answer (the tests assert it).
In lower precision the batch shape changes rounding, and a near-tie between
two tokens can flip: this measures how often and how early, per dtype.

    python bench/llm_drift.py --dtype bfloat16 --requests 8 --max-new-tokens 48
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.llm_throughput import QUESTIONS
from bot.settings import DEFAULT_SYSTEM_PROMPT
from llm.base import ChatMessage, GenerationRequest, SamplingParams
from llm.transformers import TransformersBackend


async def _text(backend: TransformersBackend, request: GenerationRequest) -> str:
    return "".join([d.text async for d in backend.stream(request)])


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    args = parser.parse_args(argv)

    backend = TransformersBackend(
        data_dir=args.data_dir, dtype=args.dtype, max_batch_size=args.requests
    )
    await backend.load()
    sampling = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=0.0, repetition_penalty=1.15
    )
    requests = [
        GenerationRequest(
            [ChatMessage("system", DEFAULT_SYSTEM_PROMPT), ChatMessage("user", q)],
            sampling=sampling,
        )
        for q in QUESTIONS[: args.requests]
    ]
    started = time.perf_counter()
    alone = [await _text(backend, r) for r in requests]
    solo_s = time.perf_counter() - started
    started = time.perf_counter()
    together = await asyncio.gather(*(_text(backend, r) for r in requests))
    batch_s = time.perf_counter() - started
    await backend.aclose()

    same = 0
    for i, (a, b) in enumerate(zip(alone, together, strict=True)):
        if a == b:
            same += 1
            print(f"{i:2} identical ({len(a)} chars)")
            continue
        at = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
        print(f"{i:2} differs from character {at} of {len(a)}: ...{a[max(0, at - 20) : at + 20]!r}")
        print(f"{'':2}                  batched: ...{b[max(0, at - 20) : at + 20]!r}")
    print(
        f"{args.dtype}: {same}/{len(requests)} batched answers identical to solo "
        f"(solo {solo_s:.1f} s, batched {batch_s:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
