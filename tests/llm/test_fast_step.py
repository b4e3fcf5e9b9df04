"""The packed decode step: its packing, its forward pass, its cache file and its readiness."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from llm.base import ChatMessage, GenerationRequest, SamplingParams
from llm.errors import ModelConfigError
from llm.scheduler import NewSequence
from llm.transformers import TransformersBackend
from llm.transformers.engine import TorchEngine
from llm.transformers.fast_step import FastDecoder, cache_file_for, pack, supports, try_build
from tests.llm.support import run_sync

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0, repetition_penalty=1.15)


def _tiny_llama(**overrides: Any) -> Any:
    """A randomly initialised Llama small enough to build in a moment."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=0,
        **overrides,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    # Larger weights than the initialiser's make wrong maths show in the argmax.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model


class _NoTokenizer:
    eos_token_id = 0


def _greedy(model: Any, decoder: FastDecoder | None, prompt: list[int]) -> list[int]:
    engine = TorchEngine(model, _NoTokenizer(), device="cpu")
    engine.use_fast_step(decoder, max_rows=4)
    tokens = [engine.add([NewSequence(1, prompt, GREEDY)])[1]]
    for _ in range(GREEDY.max_new_tokens):
        tokens.append(engine.step()[1])
    return tokens


def test_pack_keeps_q4_1_blocks_exactly() -> None:
    # Weights as a Q4_1 file holds them: w = d * q + m per block of 32, with every
    # block using its lowest and highest level (which is how Q4_1 picks d and m).
    torch.manual_seed(1)
    rows, blocks = 48, 4
    q = torch.randint(0, 16, (rows, blocks, 32))
    q[..., 0], q[..., 1] = 0, 15
    d = (torch.rand(rows, blocks, 1) * 0.02 + 0.001).bfloat16().float()
    m = (-8 * d).bfloat16().float()  # the kernel's zero (m + 8 d) is then 0, exact in bf16
    weight = (d * q + m).reshape(rows, blocks * 32)
    packed = pack(weight)
    identity = torch.eye(blocks * 32)
    recovered = packed(identity).t()
    assert torch.equal(recovered, weight.bfloat16().float())


def test_fast_step_on_float_weights_gives_the_eager_tokens() -> None:
    model = _tiny_llama()
    prompt = [5, 17, 33, 2, 60, 41, 9]
    eager = _greedy(model, None, prompt)
    fast = _greedy(model, FastDecoder.build(model, packed=False), prompt)
    assert fast == eager


def test_packed_step_stays_close_to_the_eager_logits() -> None:
    model = _tiny_llama()
    prompt = [3, 14, 15, 92, 65, 35]
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        cache = transformers.DynamicCache()
        model(input_ids=ids[:, :-1], past_key_values=cache, use_cache=True)
        eager = model(input_ids=ids[:, -1:], past_key_values=cache, use_cache=True).logits[0, -1]
        cache = transformers.DynamicCache()
        model(input_ids=ids[:, :-1], past_key_values=cache, use_cache=True)
        decoder = FastDecoder.build(model)
        positions = torch.tensor([len(prompt) - 1])
        fast = decoder.logits(ids[:, -1], positions, cache)[0]
    similarity = torch.nn.functional.cosine_similarity(fast, eager, dim=0)
    assert similarity > 0.98, similarity
    assert cache.get_seq_length() == len(prompt)


def test_packed_weights_are_cached_on_disk(tmp_path: Path) -> None:
    model = _tiny_llama()
    path = tmp_path / "compiled" / "tiny.pt"
    first = FastDecoder.build(model, cache_file=path)
    assert path.is_file()
    again = FastDecoder.build(model, cache_file=path)
    prompt = [7, 8, 9, 10, 11]
    assert _greedy(model, again, prompt) == _greedy(model, first, prompt)
    path.write_bytes(b"not a torch file")  # a damaged cache is rebuilt, not fatal
    rebuilt, why = try_build(model, cache_file=path)
    assert rebuilt is not None and why == "ready"


def test_cache_file_name_follows_the_weights(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"one")
    before = cache_file_for(tmp_path, model_dir)
    (model_dir / "model.safetensors").write_bytes(b"other")
    assert cache_file_for(tmp_path, model_dir) != before
    assert before.parent == tmp_path / "compiled"


def test_models_the_step_cannot_take_keep_the_eager_step() -> None:
    model = _tiny_llama(attention_bias=True)
    assert supports(model) == "the model's layers have biases"
    decoder, why = try_build(model)
    assert decoder is None and "biases" in why


def test_unknown_fast_decode_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="DESKMATE_FAST_DECODE must be one of auto, off"):
        TransformersBackend(data_dir=tmp_path, fast_decode="always")


async def _answer(backend: TransformersBackend, question: str) -> str:
    request = GenerationRequest(
        messages=[ChatMessage("user", question)],
        sampling=SamplingParams(max_new_tokens=8, temperature=0.0),
    )
    return "".join([delta.text async for delta in backend.stream(request)])


@pytest.mark.model
def test_backend_reports_the_fast_step_ready_and_answers_with_it(
    model_data_dir: Path, embedded_backend: TransformersBackend
) -> None:
    # The session's backend was loaded with the step off: it stays off.
    assert embedded_backend.loaded_info and embedded_backend.fast_decode == "off"
    backend = TransformersBackend(data_dir=model_data_dir, dtype="float32", max_batch_size=2)
    try:
        run_sync(backend.load())
        assert backend.fast_decode in ("building", "ready")
        deadline = time.monotonic() + 300
        while backend.fast_decode == "building" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert backend.fast_decode == "ready"
        assert any(model_data_dir.glob("compiled/*-int4-*.pt"))
        assert run_sync(_answer(backend, "How do I reset my password?")).strip()
    finally:
        run_sync(backend.aclose())
