"""A Llama model and its tokenizer without transformers: torch, ``tokenizers`` and jinja2 only.

Importing transformers costs more than torch itself (its modeling code pulls in
``torch.distributed.tensor``, ``torch._dynamo``, scipy through the loss
modules): 3.5 of a warm start's 8.6 s on a quiet machine. A plain Llama-shaped
model in float32 on the CPU (the embedded SmolLM2) needs none of it: its
forward pass is a few dozen lines, the tokenizer is ``tokenizer.json``, the chat
template is jinja. ``LightLlama`` has the attribute layout and the call
signature of transformers' ``LlamaForCausalLM`` that ``TorchEngine`` and the
packed decode step use (``model.layers[i].self_attn.q_proj`` and so on,
``forward(input_ids, attention_mask, position_ids, past_key_values,
logits_to_keep)``), so both run on it unchanged; its results match
transformers' up to float rounding (tests/llm/test_light_model.py).

``unsupported(model_dir, ...)`` says why a model must go through transformers
instead: another architecture, biases, rope scaling, a GPU, bf16 or
quantization.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from llm.transformers.kv_cache import GrowingBuffers

if TYPE_CHECKING:
    from collections.abc import Sequence


def unsupported(model_dir: Path, *, device: str, dtype: Any, quantization: str) -> str | None:
    """Why the model in ``model_dir`` cannot load as ``LightLlama``, or None when it can."""
    if device != "cpu" or quantization != "none" or dtype != torch.float32:
        return "only float32 on the CPU, unquantized"
    try:
        config = json.loads((model_dir / "config.json").read_text())
        tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable config: {exc}"
    if not (model_dir / "tokenizer.json").is_file():
        return "no tokenizer.json"
    if not _chat_template(model_dir, tokenizer_config):
        return "no chat template"
    if config.get("model_type") != "llama" or config.get("hidden_act", "silu") != "silu":
        return f"model type {config.get('model_type')!r} is not a plain Llama"
    if config.get("attention_bias") or config.get("mlp_bias"):
        return "the model's layers have biases"
    if config.get("pretraining_tp", 1) != 1:
        return "tensor-parallel pretraining slices"
    rope = config.get("rope_parameters") or {}
    if (rope.get("rope_type") or "default") != "default" or config.get("rope_scaling"):
        return "the model scales its rotary embedding"
    if _rope_theta(config) is None:
        return "no rope theta in config.json"
    if not sorted(model_dir.glob("*.safetensors")):
        return "no safetensors weights"
    return None


def load(model_dir: Path) -> tuple[LightLlama, LightTokenizer]:
    """The float32 model and the tokenizer in ``model_dir`` (check ``unsupported`` first)."""
    from safetensors.torch import load_file

    config = _Config(json.loads((model_dir / "config.json").read_text()))
    weights: dict[str, torch.Tensor] = {}
    # bf16 on disk, float32 the compute dtype on CPUs without native bf16. The copy
    # is bound by page faults: on 2 busy cores two threads took 4.2 s, one 1.5 s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for path in sorted(model_dir.glob("*.safetensors")):
            weights.update((name, tensor.float()) for name, tensor in load_file(path).items())
    finally:
        torch.set_num_threads(threads)
    if config.tie_word_embeddings or "lm_head.weight" not in weights:
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    model = LightLlama(config, weights)
    _check_shapes(model, config)
    unused = set(weights) - {name for name, _ in model.named_parameters(remove_duplicate=False)}
    if unused:
        raise ValueError(f"{model_dir}: weights the model does not use: {sorted(unused)[:3]}")
    model.eval()
    return model, LightTokenizer(model_dir)


def _check_shapes(model: LightLlama, config: _Config) -> None:
    """ValueError unless every weight has the shape config.json gives it."""
    width, dim = config.hidden_size, config.head_dim
    queries, kv = config.num_attention_heads * dim, config.num_key_value_heads * dim
    inner = config.intermediate_size
    wanted: dict[str, tuple[int, int]] = {
        "model.embed_tokens.weight": (config.vocab_size, width),
        "lm_head.weight": (config.vocab_size, width),
    }
    for i in range(config.num_hidden_layers):
        layer = f"model.layers.{i}."
        for name, shape in (
            ("self_attn.q_proj", (queries, width)),
            ("self_attn.k_proj", (kv, width)),
            ("self_attn.v_proj", (kv, width)),
            ("self_attn.o_proj", (width, queries)),
            ("mlp.gate_proj", (inner, width)),
            ("mlp.up_proj", (inner, width)),
            ("mlp.down_proj", (width, inner)),
        ):
            wanted[f"{layer}{name}.weight"] = shape
    for name, parameter in model.named_parameters(remove_duplicate=False):
        shape = wanted.get(name, (width,))  # the rest are norms
        if tuple(parameter.shape) != shape:
            raise ValueError(f"{name} is {tuple(parameter.shape)}, config.json says {shape}")


class _Config(SimpleNamespace):
    """config.json's values as attributes, with the defaults transformers' LlamaConfig has."""

    def __init__(self, values: dict[str, Any]) -> None:
        heads = int(values["num_attention_heads"])
        defaults = {
            "num_key_value_heads": heads,
            "head_dim": int(values["hidden_size"]) // heads,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": False,
            "max_position_embeddings": 2048,
        }
        merged = {**defaults, **{k: v for k, v in values.items() if v is not None}}
        super().__init__(**merged, rope_theta=_rope_theta(values))

    def get_text_config(self) -> _Config:
        return self


def _rope_theta(config: dict[str, Any]) -> float | None:
    value = (config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta"))
    return None if value is None else float(value)


class _Rotary:
    """Rotary position embedding, the default kind: ``(x, positions) -> (cos, sin)``."""

    def __init__(self, head_dim: int, theta: float) -> None:
        steps = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float()
        self.inv_freq = 1.0 / (theta ** (steps / head_dim))

    def __call__(
        self, x: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions[..., None].float() * self.inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos().to(x.dtype), angles.sin().to(x.dtype)


def _linear(weight: torch.Tensor) -> nn.Linear:
    """An ``nn.Linear`` around ``weight``, without the random initialization of its constructor."""
    layer = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(layer)
    layer.out_features, layer.in_features = weight.shape
    layer.weight = nn.Parameter(weight, requires_grad=False)
    layer.register_parameter("bias", None)
    return layer


class _Weight(nn.Module):
    """A norm's or the embedding's weight, under the name transformers gives it."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.weight)


class _Attention(nn.Module):
    def __init__(self, weights: dict[str, torch.Tensor], prefix: str) -> None:
        super().__init__()
        self.q_proj = _linear(weights[f"{prefix}q_proj.weight"])
        self.k_proj = _linear(weights[f"{prefix}k_proj.weight"])
        self.v_proj = _linear(weights[f"{prefix}v_proj.weight"])
        self.o_proj = _linear(weights[f"{prefix}o_proj.weight"])


class _Mlp(nn.Module):
    def __init__(self, weights: dict[str, torch.Tensor], prefix: str) -> None:
        super().__init__()
        self.gate_proj = _linear(weights[f"{prefix}gate_proj.weight"])
        self.up_proj = _linear(weights[f"{prefix}up_proj.weight"])
        self.down_proj = _linear(weights[f"{prefix}down_proj.weight"])


class _Block(nn.Module):
    def __init__(self, weights: dict[str, torch.Tensor], prefix: str) -> None:
        super().__init__()
        self.self_attn = _Attention(weights, f"{prefix}self_attn.")
        self.mlp = _Mlp(weights, f"{prefix}mlp.")
        self.input_layernorm = _Weight(weights[f"{prefix}input_layernorm.weight"])
        self.post_attention_layernorm = _Weight(weights[f"{prefix}post_attention_layernorm.weight"])


class _Body(nn.Module):
    def __init__(self, config: _Config, weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = _Weight(weights["model.embed_tokens.weight"])
        self.layers = nn.ModuleList(
            _Block(weights, f"model.layers.{i}.") for i in range(config.num_hidden_layers)
        )
        self.norm = _Weight(weights["model.norm.weight"])
        self.rotary_emb = _Rotary(config.head_dim, config.rope_theta)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: LightCache | None = None,
        **_: Any,
    ) -> SimpleNamespace:
        config = self.config
        rows, length = input_ids.shape
        cache = past_key_values
        if cache is not None:
            while len(cache.layers) < len(self.layers):
                cache.layers.append(LightLayer())
        past = cache.past_length() if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + length)[None].expand(rows, -1)
        mask = _mask(rows, length, past, attention_mask)
        hidden = self.embed_tokens(input_ids)
        cos, sin = self.rotary_emb(hidden, position_ids)
        cos, sin = cos[:, None], sin[:, None]
        heads, kv_heads, dim = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        )
        eps, width = config.rms_norm_eps, (config.hidden_size,)
        functional = nn.functional
        for index, block in enumerate(self.layers):
            attn = block.self_attn
            normed = functional.rms_norm(hidden, width, block.input_layernorm.weight, eps)
            q = attn.q_proj(normed).view(rows, length, heads, dim).transpose(1, 2)
            k = attn.k_proj(normed).view(rows, length, kv_heads, dim).transpose(1, 2)
            v = attn.v_proj(normed).view(rows, length, kv_heads, dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            if cache is not None:
                k, v = cache.layers[index].update(k, v)
            attended = functional.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None and length > 1, enable_gqa=True
            )
            attended = attended.transpose(1, 2).reshape(rows, length, heads * dim)
            hidden = hidden + attn.o_proj(attended)
            normed = functional.rms_norm(hidden, width, block.post_attention_layernorm.weight, eps)
            mlp = block.mlp
            hidden = hidden + mlp.down_proj(
                functional.silu(mlp.gate_proj(normed)) * mlp.up_proj(normed)
            )
        hidden = functional.rms_norm(hidden, width, self.norm.weight, eps)
        return SimpleNamespace(last_hidden_state=hidden)


def _mask(
    rows: int, length: int, past: int, attention_mask: torch.Tensor | None
) -> torch.Tensor | None:
    """Boolean [rows, 1, length, past + length] mask (True: may attend), or None for plain causal.

    Every query also sees itself, so a padding row never attends to nothing
    (NaN that would reach the values of later steps); its output is unused.
    """
    if attention_mask is None and (past == 0 or length == 1):
        return None  # plain causal, or one query that sees every key
    total = past + length
    allowed = torch.arange(total)[None, :] <= past + torch.arange(length)[:, None]
    if attention_mask is None:
        return allowed[None, None].expand(rows, 1, -1, -1)
    allowed = allowed[None] & attention_mask[:, None, :total].bool()
    allowed[:, :, past:] |= torch.eye(length, dtype=torch.bool)
    return allowed[:, None]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LightLlama(nn.Module):
    """A float32 Llama with the surface of transformers' ``LlamaForCausalLM`` that Deskmate uses."""

    generation_config = None

    def __init__(self, config: _Config, weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.config = config
        self.model = _Body(config, weights)
        self.lm_head = _linear(weights["lm_head.weight"])
        # ``TorchEngine`` builds its KV caches from these (instead of transformers').
        self.cache_types = (LightCache, LightLayer)

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def base_model(self) -> _Body:
        return self.model

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: LightCache | None = None,
        logits_to_keep: int = 0,
        **_: Any,
    ) -> SimpleNamespace:
        hidden = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
        ).last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return SimpleNamespace(logits=self.lm_head(hidden))


class LightLayer(GrowingBuffers):
    """One layer's keys and values, grown in place like transformers' layer is, without it."""

    def __init__(self) -> None:
        self.is_initialized = False
        self.keys = self.values = self._key_buffer = self._value_buffer = torch.empty(0)
        self._length = 0

    @classmethod
    def holding(cls, keys: torch.Tensor, values: torch.Tensor) -> LightLayer:
        layer = cls()
        layer._allocate(keys, values, keys.shape[-2], keys.shape[-2])
        layer.is_initialized = True
        return layer

    def update(
        self, keys: torch.Tensor, values: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self._allocate(keys, values, 0, keys.shape[-2])
            self.is_initialized = True
        return self._append(keys, values)


class LightCache:
    """The KV cache of a batch: ``layers``, built like transformers' ``DynamicCache``."""

    def __init__(self, ddp_cache_data: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()) -> None:
        self.layers: list[LightLayer] = [LightLayer.holding(k, v) for k, v in ddp_cache_data]

    def past_length(self) -> int:
        first = self.layers[0] if self.layers else None
        return int(first.keys.shape[-2]) if first is not None and first.is_initialized else 0


class LightTokenizer:
    """``tokenizer.json`` and the chat template, with the calls ``TorchEngine`` makes."""

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "tokenizer_config.json").read_text())
        self.backend_tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.chat_template = _chat_template(model_dir, config)
        self._specials = {
            name: _token_text(config.get(name))
            for name in ("bos_token", "eos_token", "unk_token", "pad_token")
        }
        eos = self._specials["eos_token"]
        self.eos_token_id = self.backend_tokenizer.token_to_id(eos) if eos else None
        self._template: Any = None

    def apply_chat_template(
        self, conversation: Sequence[dict[str, str]], *, add_generation_prompt: bool, **_: Any
    ) -> list[int]:
        """Token ids of the rendered conversation (transformers' ``tokenize=True`` result)."""
        if self._template is None:
            self._template = _compile_template(self.chat_template)
        text = self._template.render(
            messages=list(conversation),
            add_generation_prompt=add_generation_prompt,
            **{k: v for k, v in self._specials.items() if v is not None},
        )
        return list(self.backend_tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, token_ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        return str(
            self.backend_tokenizer.decode(list(token_ids), skip_special_tokens=skip_special_tokens)
        )


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # an AddedToken written out
        value = value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(model_dir: Path, tokenizer_config: dict[str, Any]) -> str | None:
    path = model_dir / "chat_template.jinja"
    if path.is_file():
        return path.read_text()
    template = tokenizer_config.get("chat_template")
    return template if isinstance(template, str) else None


def _compile_template(source: str | None) -> Any:
    """The template in the environment transformers renders chat templates in."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **_: Any) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source or "")
