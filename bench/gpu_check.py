"""The GPU path in a few minutes: CUDA, bf16, bitsandbytes, batched vs one at a time.

Run by ``bench/gpu_check.sh`` on a single-GPU machine with no internet. It
checks that CUDA works and multiplies in bf16, that bitsandbytes' 4-bit and
8-bit layers run on the GPU, then serves ``--concurrency`` conversations at
once through Deskmate's scheduler (``llm.scheduler.BatchScheduler`` driving
``llm.transformers.engine.TorchEngine``) — batched, and one at a time
(the same code with a batch of one) — and prints a markdown table.

Each weights kind (bf16, bitsandbytes 4-bit and 8-bit) is served at every
``--concurrency`` (default 1, 8, 32) with the engine's eager step: the packed
int4 decode step (``llm/transformers/fast_step.py``) runs on the CPU only, so
a GPU gets no fast step yet. At one conversation the decode speed is set against
the memory-bandwidth ceiling: every token reads all the weights once, so
weight bytes x tokens/s over the GPU's peak bandwidth (from a table by name,
else a measured device copy) is the share of the ceiling reached.

Without a usable CUDA GPU it exits at once with status 3 and one line saying why.

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
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
    parser.add_argument("--dry-run", action="store_true", help="check arguments and sizes, no GPU")
    parser.add_argument(
        "--probe", action="store_true", help="only say whether CUDA is usable (status 0 or 3)"
    )
    parser.set_defaults(random_dir=None)
    args = parser.parse_args(argv)
    if any(c < 1 for c in args.concurrency):
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


# Peak memory bandwidth by GPU name (vendor data sheets), bytes/s; the first match wins.
PEAK_BANDWIDTH: tuple[tuple[str, float], ...] = (
    ("H200", 4.8e12),
    ("H100 NVL", 3.9e12),
    ("H100 PCIe", 2.0e12),
    ("H100", 3.35e12),
    ("GH200", 4.0e12),
    ("A100-SXM4-80GB", 2.039e12),
    ("A100 80GB PCIe", 1.935e12),
    ("A100", 1.555e12),
    ("L40S", 0.864e12),
    ("L40", 0.864e12),
    ("L4", 0.3e12),
    ("A10G", 0.6e12),
    ("A10", 0.6e12),
    ("T4", 0.32e12),
    ("V100", 0.9e12),
    ("RTX 4090", 1.008e12),
    ("RTX 3090", 0.936e12),
)

# Exit status when there is no GPU to check: distinct from argument errors (2).
NO_CUDA = 3


def cuda_problem() -> str | None:
    """Why this machine cannot run the check (one line), or None when CUDA is usable."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return "no GPU is visible (CUDA_VISIBLE_DEVICES hides them all)"
    try:
        import torch
    except Exception as exc:
        return f"torch cannot be imported ({type(exc).__name__}: {exc})"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build (no CUDA)"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable CUDA GPU"
    return None


def peak_bandwidth(name: str) -> float | None:
    """The data-sheet memory bandwidth of the GPU called ``name`` (bytes/s), if known."""
    for key, value in PEAK_BANDWIDTH:
        if key.lower() in name.lower():
            return value
    return None


def measured_bandwidth(torch: Any, size: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second)."""
    source = torch.empty(size, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    target.copy_(source)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        target.copy_(source)
    torch.cuda.synchronize()
    return 2 * 10 * size / (time.perf_counter() - started)


def weight_bytes(model: Any) -> int:
    """Bytes of weights one decode step reads (parameters and buffers, as stored)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def check_cuda(torch: Any) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
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


@dataclass(frozen=True)
class Served:
    tok_s: float  # all conversations' tokens over the wall time
    ttft_p95: float
    decode_tok_s: float  # per conversation, after its first token (median)


async def serve(model: Any, tokenizer: Any, concurrency: int, max_new: int) -> Served:
    """``concurrency`` conversations at once through the scheduler, all in one batch."""
    from llm.scheduler import BatchScheduler
    from llm.transformers.engine import TorchEngine

    engine = TorchEngine(model, tokenizer, device="cuda")
    scheduler = BatchScheduler(
        engine,
        context_window=4096,
        max_batch_size=concurrency,
        max_queue=concurrency,
        name="gpu-check",
    )
    scheduler.start()
    sampling = SamplingParams(max_new_tokens=max_new, temperature=0.0, repetition_penalty=1.15)

    async def one(i: int) -> tuple[float, int, float]:
        messages = [
            ChatMessage("system", SYSTEM),
            ChatMessage("user", f"({i}) {QUESTIONS[i % len(QUESTIONS)]}"),
        ]
        started = time.perf_counter()
        first: float | None = None
        last = started
        tokens = 0
        async for delta in scheduler.stream(GenerationRequest(messages, sampling=sampling)):
            last = time.perf_counter()
            if first is None:
                first = last
            if delta.usage is not None:
                tokens = delta.usage.completion_tokens
        first = first or last
        decode = (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0
        return first - started, tokens, decode

    try:
        await asyncio.gather(*(one(i) for i in range(min(2, concurrency))))  # warm-up
        started = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(concurrency)))
        wall = time.perf_counter() - started
    finally:
        await scheduler.aclose()
    ttfts = sorted(t for t, _, _ in results)
    p95 = ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))]
    return Served(
        sum(n for _, n, _ in results) / wall, p95, statistics.median(d for _, _, d in results)
    )


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.dry_run and (problem := cuda_problem()) is not None:
        print(f"gpu_check: cannot run: {problem}", file=sys.stderr)
        return NO_CUDA
    if args.probe:
        return 0
    config, params = describe_model(args)
    source = str(args.model) if args.model else "RANDOM WEIGHTS (throughput only)"
    print(f"model: {source}; {config.model_type}, {params / 1e9:.2f} B parameters")
    print(f"concurrency {args.concurrency}, {args.max_new_tokens} new tokens, {args.dtype}")
    print("decode step: eager (the packed int4 step is CPU-only)")
    if args.dry_run:
        print(f"tokenizer from: {args.tokenizer or args.model or 'the embedded SmolLM2-135M'}")
        print("dry run: arguments and config are valid; run without --dry-run on a GPU")
        return 0

    import torch
    from transformers import AutoTokenizer

    checks = check_cuda(torch)
    name = torch.cuda.get_device_properties(0).name
    measured = measured_bandwidth(torch)
    ceiling = peak_bandwidth(name) or measured
    checks.append(("copy bandwidth (measured)", f"{measured / 1e9:.0f} GB/s"))
    checks.append(("bandwidth ceiling used", f"{ceiling / 1e9:.0f} GB/s"))
    if not args.skip_quantized:
        checks += check_bitsandbytes(torch)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(args))

    print()
    print("| check | result |")
    print("|---|---|")
    for check, value in checks:
        print(f"| {check} | {value} |")

    rows: list[tuple[str, int, float, Served]] = []
    model = build_model(args, torch)
    kinds = [args.dtype] if args.skip_quantized else [args.dtype, "4bit", "8bit"]
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        for kind in kinds:
            if kind != args.dtype:
                if args.model is None and args.random_dir is None:
                    # bitsandbytes quantizes while loading a checkpoint: save the random one.
                    model.save_pretrained(folder)
                    args.random_dir = folder
                del model
                torch.cuda.empty_cache()
                try:
                    model = build_model(args, torch, kind)
                except Exception as exc:  # reported, the run goes on
                    print(f"{kind}: could not load ({type(exc).__name__}: {exc})")
                    model = None
                    continue
            size = weight_bytes(model)
            for concurrency in args.concurrency:
                served = await serve(model, tokenizer, concurrency, args.max_new_tokens)
                rows.append((kind, concurrency, size, served))
                print(f"{kind} x{concurrency}: {served.tok_s:.0f} tok/s")

    print()
    print(f"Model: {source}, {params / 1e9:.2f} B parameters; {args.max_new_tokens} new tokens;")
    print(f"eager decode step; bandwidth ceiling {ceiling / 1e9:.0f} GB/s ({name}).")
    print()
    print("| weights | GB | conc. | tok/s | TTFT p95 | decode tok/s per conv. | of bandwidth |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, c, size, served in rows:
        share = f"{size * served.decode_tok_s / ceiling:.0%}" if c == 1 else ""
        print(
            f"| {kind} | {size / 1e9:.2f} | {c} | {served.tok_s:.0f} | {served.ttft_p95:.2f} s "
            f"| {served.decode_tok_s:.0f} | {share} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
