"""The GPU path in a few minutes: CUDA, bf16, bitsandbytes, batched vs one at a time.

Run by ``bench/gpu_check.sh`` on a single-GPU machine with no internet. It
checks that CUDA works and multiplies in bf16, that bitsandbytes' 4-bit and
8-bit layers run on the GPU, then serves ``--concurrency`` conversations at
once through Deskmate's scheduler (``llm.scheduler.BatchScheduler`` driving
``llm.transformers.engine.TorchEngine``) — batched, and one at a time
(the same code with a batch of one) — and prints a markdown table.

The model: ``--model DIR`` (a transformers folder with a chat template), else
RANDOM WEIGHTS of the SmolLM2-1.7B architecture (the config is written below;
1.7 B parameters, 24 layers) with the tokenizer of the embedded SmolLM2-135M,
which has the same vocabulary. Random weights answer gibberish and rarely stop
early: they are for throughput only, never for quality.

    python bench/gpu_check.py --dry-run          # CPU only: arguments, config, sizes
    python bench/gpu_check.py                    # on the GPU machine
    python bench/gpu_check.py --model /models/Qwen2.5-1.5B-Instruct --concurrency 1 8 32
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm.base import ChatMessage, GenerationRequest, SamplingParams  # noqa: E402

# SmolLM2-1.7B-Instruct's architecture (a Llama): same tokenizer as the embedded 135M model.
RANDOM_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 49152,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 24,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 130000.0,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}

SYSTEM = (
    "You are Deskmate, a friendly and concise customer-support assistant. Answer the "
    "customer's question clearly in a few sentences."
)
QUESTIONS = [
    "How do I reset my password?",
    "My order has not arrived after two weeks. What can I do?",
    "Can I change the delivery address of an order I already placed?",
    "Which payment methods do you accept?",
    "I was charged twice for the same order. Please help.",
    "What is your return policy for damaged items?",
    "How long does shipping to Canada take?",
    "How do I enable two-factor authentication?",
]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a transformers model folder (default: random)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer folder for random weights")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--skip-quantized", action="store_true", help="no 4-bit/8-bit runs")
    parser.add_argument("--quantized-concurrency", type=int, default=8)
    parser.add_argument("--dry-run", action="store_true", help="check arguments and sizes, no GPU")
    args = parser.parse_args(argv)
    if any(c < 1 for c in args.concurrency) or args.quantized_concurrency < 1:
        parser.error("concurrency must be at least 1")
    if args.max_new_tokens < 1:
        parser.error("--max-new-tokens must be at least 1")
    if args.model is not None and not (args.model / "config.json").is_file():
        parser.error(f"--model {args.model}: no config.json there")
    if args.tokenizer is not None and not args.tokenizer.is_dir():
        parser.error(f"--tokenizer {args.tokenizer}: not a folder")
    return args


def tokenizer_folder(args: argparse.Namespace) -> Path:
    """Where the tokenizer comes from: the model, ``--tokenizer``, or the embedded model."""
    if args.model is not None:
        return Path(args.model)
    if args.tokenizer is not None:
        return Path(args.tokenizer)
    from llm.transformers.loading import find_model_dir

    # Converts the embedded GGUF once (about 30 s) when data/models/ lacks it.
    return find_model_dir("embedded", args.data_dir)


def describe_model(args: argparse.Namespace) -> tuple[Any, int]:
    """The config and the parameter count, built on the meta device (no memory, no GPU)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    config = AutoConfig.from_pretrained(args.model) if args.model else LlamaConfig(**RANDOM_CONFIG)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return config, sum(p.numel() for p in model.parameters())


def check_cuda(torch: Any) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if not torch.cuda.is_available():
        raise SystemExit(f"CUDA is not available to torch {torch.__version__}: nothing to check")
    props = torch.cuda.get_device_properties(0)
    rows.append(("GPU", f"{props.name}, {props.total_memory / 2**30:.0f} GiB"))
    rows.append(("torch / CUDA", f"{torch.__version__} / {torch.version.cuda}"))
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
    tflops = 20 * 2 * 4096**3 / (time.perf_counter() - started) / 1e12
    rows.append(("bf16 supported", str(torch.cuda.is_bf16_supported())))
    rows.append(("bf16 matmul 4096²", f"{tflops:.0f} TFLOPS"))
    return rows


def check_bitsandbytes(torch: Any) -> list[tuple[str, str]]:
    from llm.transformers.loading import _bitsandbytes_problem

    rows = []
    for kind in ("4bit", "8bit"):
        problem = _bitsandbytes_problem(kind, "cuda", torch)
        rows.append((f"bitsandbytes {kind} layer", "ok" if problem is None else problem))
    return rows


def build_model(args: argparse.Namespace, torch: Any, quantization: str = "none") -> Any:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig

    dtype = getattr(torch, args.dtype)
    if args.model is None and quantization == "none":
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(
                LlamaConfig(**RANDOM_CONFIG), dtype=dtype, attn_implementation="sdpa"
            )
        return model.eval()
    source = args.model if args.model is not None else args.random_dir
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "attn_implementation": "sdpa",
        "device_map": {"": "cuda"},
    }
    if quantization == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    elif quantization == "8bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    return AutoModelForCausalLM.from_pretrained(source, **kwargs).eval()


async def serve(
    model: Any, tokenizer: Any, concurrency: int, batch: int, max_new: int
) -> tuple[float, float]:
    """Aggregate tok/s and TTFT p95: ``concurrency`` conversations at once, ``batch`` per step."""
    from llm.scheduler import BatchScheduler
    from llm.transformers.engine import TorchEngine

    engine = TorchEngine(model, tokenizer, device="cuda")
    scheduler = BatchScheduler(
        engine, context_window=4096, max_batch_size=batch, max_queue=concurrency, name="gpu-check"
    )
    scheduler.start()
    sampling = SamplingParams(max_new_tokens=max_new, temperature=0.0, repetition_penalty=1.15)

    async def one(i: int) -> tuple[float, int]:
        messages = [
            ChatMessage("system", SYSTEM),
            ChatMessage("user", f"({i}) {QUESTIONS[i % len(QUESTIONS)]}"),
        ]
        started = time.perf_counter()
        first: float | None = None
        tokens = 0
        async for delta in scheduler.stream(GenerationRequest(messages, sampling=sampling)):
            if first is None:
                first = time.perf_counter() - started
            if delta.usage is not None:
                tokens = delta.usage.completion_tokens
        return (first or 0.0), tokens

    try:
        await asyncio.gather(*(one(i) for i in range(min(2, concurrency))))  # warm-up
        started = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(concurrency)))
        wall = time.perf_counter() - started
    finally:
        await scheduler.aclose()
    ttfts = sorted(t for t, _ in results)
    p95 = ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))]
    return sum(n for _, n in results) / wall, p95


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config, params = describe_model(args)
    source = str(args.model) if args.model else "RANDOM WEIGHTS (throughput only)"
    print(f"model: {source}; {config.model_type}, {params / 1e9:.2f} B parameters")
    print(f"concurrency {args.concurrency}, {args.max_new_tokens} new tokens, {args.dtype}")
    if args.dry_run:
        print(f"tokenizer from: {args.tokenizer or args.model or 'the embedded SmolLM2-135M'}")
        print("dry run: arguments and config are valid; run without --dry-run on a GPU")
        return 0

    import torch
    from transformers import AutoTokenizer

    checks = check_cuda(torch)
    if not args.skip_quantized:
        checks += check_bitsandbytes(torch)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(args))

    print()
    print("| check | result |")
    print("|---|---|")
    for name, value in checks:
        print(f"| {name} | {value} |")

    rows: list[tuple[str, int, float, float, float, float]] = []
    model = build_model(args, torch)
    for concurrency in args.concurrency:
        batched = await serve(model, tokenizer, concurrency, concurrency, args.max_new_tokens)
        solo = await serve(model, tokenizer, concurrency, 1, args.max_new_tokens)
        rows.append((args.dtype, concurrency, batched[0], solo[0], batched[1], solo[1]))
        print(f"x{concurrency}: batched {batched[0]:.0f} tok/s, one at a time {solo[0]:.0f}")

    if not args.skip_quantized:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
            if args.model is None:
                # bitsandbytes quantizes while loading a checkpoint: save the random one first.
                model.save_pretrained(folder)
                args.random_dir = folder
            del model
            torch.cuda.empty_cache()
            for kind in ("4bit", "8bit"):
                try:
                    quantized = build_model(args, torch, kind)
                except Exception as exc:  # reported in the table, the run goes on
                    print(f"{kind}: could not load ({type(exc).__name__}: {exc})")
                    continue
                c = args.quantized_concurrency
                batched = await serve(quantized, tokenizer, c, c, args.max_new_tokens)
                solo = await serve(quantized, tokenizer, c, 1, args.max_new_tokens)
                rows.append((kind, c, batched[0], solo[0], batched[1], solo[1]))
                del quantized
                torch.cuda.empty_cache()

    print()
    print(f"Model: {source}, {params / 1e9:.2f} B parameters; {args.max_new_tokens} new tokens.")
    print()
    print(
        "| weights | conc. | batched tok/s | one at a time tok/s | ratio | TTFT p95 batched / one |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for weights, c, b, s, tb, ts in rows:
        print(f"| {weights} | {c} | {b:.0f} | {s:.0f} | {b / s:.1f}x | {tb:.2f} / {ts:.2f} s |")
    print(f"\nmedian batched tok/s: {statistics.median(r[2] for r in rows):.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
