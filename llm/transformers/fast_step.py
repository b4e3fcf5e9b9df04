"""A decode step for a few unpadded rows: int4 weights and one hand-written forward pass.

One decode row on a CPU is bound by memory bandwidth: the eager step reads
every weight of the model (540 MB in float32 for SmolLM2-135M) for one token,
and transformers' forward adds some 200 small dispatched calls on top. This
step reads the same weights packed as 4-bit integers with a scale and an
offset per group of 32 inputs, which is how the embedded GGUF file stores
them (Q4_1: ``w = d * q + m`` per block of 32), so the packing recovers the
file's own values up to bf16 rounding of ``d`` and ``m``. The query, key and
value projections are one product, and so are the gate and up projections.

The transformers model stays the source of truth: the weights are packed
from its parameters, the rotary embedding is its own module, and keys and
values go into the engine's KV cache layers, so the eager path can take any
row over at any step. Only Llama-shaped models are taken (``supports``);
anything else, and any padded batch, keeps the eager step.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

GROUP = 32  # inputs per scale/offset pair, as in a Q4_1 block
_LEVELS = 15  # 4 bits: 0..15
_CENTRE = 8  # the int4 kernel computes (q - 8) * scale + zero

# Up to this many rows the packed step beats the eager one: a decode step stays
# bound by reading the weights. Past it the products turn compute-bound, where
# float32 kernels win (bench/README.md, "A fast decode step").
FAST_MAX_ROWS = 4

# Torch threads for the packed step when they are tuned per pass. The CPU int4
# kernel splits even a one-row product across threads; on 2 vCPUs shared with
# other work, 2 threads ran a step 13x slower than 1 (1.6 s against 0.13 s), so
# the tuner's occasional trial of 2 threads cost more than it could ever win.
FAST_THREADS = 1


class _Int4:
    """One linear layer (or several stacked) for the int4 kernel: nibbles, [groups, out, 2]."""

    def __init__(self, weight: torch.Tensor, scales_zeros: torch.Tensor) -> None:
        self.weight = weight
        self.scales_zeros = scales_zeros

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        # The kernel is vectorized for bf16 inputs only (float32 and float16 run 13x
        # slower), and its output is bf16 too. It is left so: the float32 operand
        # beside it in the step promotes it exactly where a cast would.
        return torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.to(torch.bfloat16), self.weight, GROUP, self.scales_zeros
        )


class _Dense:
    """The model's own float weights, stacked products done one by one: the exact reference."""

    def __init__(self, *weights: torch.Tensor) -> None:
        self.weights = weights

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        x = x.to(self.weights[0].dtype)
        outs = [torch.nn.functional.linear(x, w) for w in self.weights]
        return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)).float()


_Linear = _Int4 | _Dense


@dataclass(slots=True)
class _Layer:
    qkv: _Linear
    o: _Linear
    gate_up: _Linear
    down: _Linear
    input_norm: torch.Tensor
    post_norm: torch.Tensor


def supports(model: Any) -> str | None:
    """Why ``model`` cannot take the packed step, or None when it can."""
    import torch

    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        return "this torch has no CPU int4 kernel"
    config = model.config.get_text_config()
    if getattr(config, "model_type", "") not in ("llama", "mistral", "qwen2"):
        return f"model type {getattr(config, 'model_type', '?')!r} is not Llama-shaped"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "the model's layers have biases"
    if getattr(config, "hidden_act", "") != "silu":
        return "the model's MLP is not SiLU-gated"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "the model uses sliding-window attention"
    if next(model.parameters()).device.type != "cpu":
        return "the model is not on the CPU"
    layers = model.model.layers
    for layer in layers:
        for linear in (*_attention(layer), *_mlp(layer)):
            if type(linear) is not torch.nn.Linear or linear.in_features % GROUP:
                return "a projection is quantized or not a multiple of 32 wide"
    return None


def _attention(layer: Any) -> tuple[Any, Any, Any, Any]:
    attn = layer.self_attn
    return attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj


def _mlp(layer: Any) -> tuple[Any, Any, Any]:
    return layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj


def pack(weight: torch.Tensor) -> _Int4:
    """Asymmetric 4-bit groups of 32 along the input axis: each group's min and max are kept."""
    import torch

    out_features, in_features = weight.shape
    groups = weight.detach().float().reshape(out_features, in_features // GROUP, GROUP)
    low = groups.amin(dim=-1, keepdim=True)
    high = groups.amax(dim=-1, keepdim=True)
    scale = ((high - low) / _LEVELS).clamp_min(1e-12)
    q = torch.round((groups - low) / scale).clamp_(0, _LEVELS).to(torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
        q.reshape(out_features, in_features), 1
    )
    zero = low + _CENTRE * scale
    scales_zeros = torch.stack([scale[..., 0].t(), zero[..., 0].t()], dim=-1)
    return _Int4(packed, scales_zeros.to(torch.bfloat16).contiguous())


def _linear(packed: bool, *linears: Any) -> _Linear:
    import torch

    if not packed:
        return _Dense(*(linear.weight for linear in linears))
    if len(linears) == 1:
        return pack(linears[0].weight)
    return pack(torch.cat([linear.weight for linear in linears], dim=0))


class FastDecoder:
    """The packed decode step of one model; build it with ``FastDecoder.build(model)``."""

    def __init__(self, model: Any, layers: list[_Layer], head: _Linear) -> None:
        import torch

        config = model.config.get_text_config()
        self._torch = torch
        self._embed = model.get_input_embeddings().weight
        self._rotary = model.model.rotary_emb
        self._final_norm = model.model.norm.weight.float()
        self._eps = float(config.rms_norm_eps)
        self._heads = int(config.num_attention_heads)
        self._kv_heads = int(getattr(config, "num_key_value_heads", self._heads))
        self._head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self._heads)
        self._hidden = int(config.hidden_size)
        self._layers = layers
        self._head = head
        self.build_seconds = 0.0

    @classmethod
    def build(
        cls, model: Any, *, packed: bool = True, cache_file: Path | None = None
    ) -> FastDecoder:
        """The step for ``model``: int4-packed, or on its float weights.

        Packing takes seconds on a CPU; with ``cache_file`` the packed
        tensors are read from there when present and written there otherwise.
        """
        import torch

        started = time.perf_counter()
        with torch.inference_mode():
            decoder = _load_packed(cls, model, cache_file) if packed and cache_file else None
            if decoder is None:
                decoder = cls._build(model, packed=packed)
                if packed and cache_file:
                    _save_packed(decoder, cache_file)
        decoder.build_seconds = time.perf_counter() - started
        return decoder

    @classmethod
    def _build(cls, model: Any, *, packed: bool) -> FastDecoder:
        layers = [
            _Layer(
                qkv=_linear(packed, *_attention(layer)[:3]),
                o=_linear(packed, layer.self_attn.o_proj),
                gate_up=_linear(packed, layer.mlp.gate_proj, layer.mlp.up_proj),
                down=_linear(packed, layer.mlp.down_proj),
                input_norm=layer.input_layernorm.weight.float(),
                post_norm=layer.post_attention_layernorm.weight.float(),
            )
            for layer in model.model.layers
        ]
        head = _linear(packed, model.get_output_embeddings())
        return cls(model, layers, head)

    def logits(self, tokens: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
        """Logits [rows, vocab] for one new token per row; appends its keys and values to ``cache``.

        Every row must see every cached position (no padding): the caller
        checks that. The residual stream stays in float32; only the inputs of
        the products are rounded to bf16, which the int4 kernel takes.
        """
        torch = self._torch
        functional = torch.nn.functional
        rows = tokens.shape[0]
        heads, kv_heads, dim = self._heads, self._kv_heads, self._head_dim
        shape = (self._hidden,)
        hidden = functional.embedding(tokens, self._embed).float()
        cos, sin = self._rotary(hidden[:, None, :], positions[:, None])
        cos, sin = cos[:, None].float(), sin[:, None].float()
        k_end = (heads + kv_heads) * dim
        for index, layer in enumerate(self._layers):
            normed = functional.rms_norm(hidden, shape, layer.input_norm, self._eps)
            qkv = layer.qkv(normed)
            # Queries and keys side by side take the rotation in one go: a step is
            # hundreds of small calls, each costing about as much as its maths.
            qk = qkv[:, :k_end].view(rows, heads + kv_heads, 1, dim)
            qk = qk * cos + _rotate_half(qk, torch) * sin
            q, k = qk[:, :heads], qk[:, heads:]
            v = qkv[:, k_end:].view(rows, kv_heads, 1, dim)
            layer_cache = cache.layers[index]
            dtype = layer_cache.keys.dtype if layer_cache.is_initialized else k.dtype
            keys, values = layer_cache.update(k.to(dtype), v.to(dtype))
            attended = functional.scaled_dot_product_attention(
                q.to(keys.dtype), keys, values, enable_gqa=kv_heads != heads
            )
            attended = attended.reshape(rows, heads * dim)
            hidden = hidden + layer.o(attended)
            normed = functional.rms_norm(hidden, shape, layer.post_norm, self._eps)
            gate, up = layer.gate_up(normed).chunk(2, dim=-1)
            hidden = hidden + layer.down(functional.silu(gate.float()) * up)
        normed = functional.rms_norm(hidden, shape, self._final_norm, self._eps)
        return self._head(normed).float()


def _rotate_half(x: torch.Tensor, torch: Any) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


_PROJECTIONS = ("qkv", "o", "gate_up", "down")


def _save_packed(decoder: FastDecoder, path: Path) -> None:
    import torch

    tensors: dict[str, torch.Tensor] = {}
    parts = [
        (f"{i}.{name}", getattr(layer, name))
        for i, layer in enumerate(decoder._layers)
        for name in _PROJECTIONS
    ]
    for key, linear in [*parts, ("head", decoder._head)]:
        assert isinstance(linear, _Int4)
        tensors[f"{key}.weight"] = linear.weight
        tensors[f"{key}.scales_zeros"] = linear.scales_zeros
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save(tensors, partial)
        partial.replace(path)  # readers never see half a file
    except OSError as exc:
        log.warning("The packed weights could not be cached in %s: %s", path, exc)


def _load_packed(cls: type[FastDecoder], model: Any, path: Path) -> FastDecoder | None:
    import torch

    if not path.is_file():
        return None
    try:
        tensors = torch.load(path, mmap=True, weights_only=True)

        def linear(key: str) -> _Int4:
            return _Int4(tensors[f"{key}.weight"], tensors[f"{key}.scales_zeros"])

        layers = [
            _Layer(
                *(linear(f"{i}.{name}") for name in _PROJECTIONS),
                input_norm=layer.input_layernorm.weight.float(),
                post_norm=layer.post_attention_layernorm.weight.float(),
            )
            for i, layer in enumerate(model.model.layers)
        ]
        return cls(model, layers, linear("head"))
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        log.warning("Ignoring the packed weights cached in %s: %s", path, exc)
        return None


def cache_file_for(data_dir: Path, model_dir: Path) -> Path:
    """Where the packed weights of the model in ``model_dir`` are cached.

    The name changes with the model's weight files and with torch (the
    packed layout is torch's), so a stale file is never read.
    """
    import torch

    digest = hashlib.sha256(f"{torch.__version__}|{model_dir.resolve()}".encode())
    for weights in sorted(model_dir.glob("*.safetensors")):
        stat = weights.stat()
        digest.update(f"|{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return data_dir / "compiled" / f"{model_dir.name}-int4-{digest.hexdigest()[:16]}.pt"


def try_build(model: Any, *, cache_file: Path | None = None) -> tuple[FastDecoder | None, str]:
    """The packed step for ``model``, or None and why not (logged, never raised)."""
    reason = supports(model)
    if reason is not None:
        return None, reason
    try:
        decoder = FastDecoder.build(model, cache_file=cache_file)
    except (RuntimeError, ValueError, NotImplementedError) as exc:
        log.warning("The fast decode step could not be built: %s", exc)
        return None, f"packing failed: {exc}"
    return decoder, "ready"
