"""The local transformers backend: configuration errors, and the real embedded model."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from llm.base import (
    Backend,
    ChatMessage,
    GenerationRequest,
    LLMError,
    LLMTimeout,
    SamplingParams,
    Scorer,
    TextDelta,
)
from llm.errors import ModelConfigError, ModelNotFound
from llm.transformers import TransformersBackend, loading
from tests.llm.support import run_sync

SYSTEM = "You are a helpful assistant. Answer in one short sentence."


def _request(
    question: str,
    *,
    system: str | None = SYSTEM,
    max_new_tokens: int = 24,
    timeout: float | None = None,
) -> GenerationRequest:
    messages = [ChatMessage("user", question)]
    if system is not None:
        messages.insert(0, ChatMessage("system", system))
    return GenerationRequest(
        messages=messages,
        sampling=SamplingParams(
            max_new_tokens=max_new_tokens, temperature=0.0, repetition_penalty=1.15
        ),
        timeout=timeout,
    )


async def _text(backend: Backend, request: GenerationRequest) -> str:
    return "".join([d.text async for d in backend.stream(request)])


async def _answer_once(backend: TransformersBackend) -> str:
    """Load, answer the first prompt, unload."""
    await backend.load()
    try:
        return await _text(backend, PROMPTS[0])
    finally:
        await backend.aclose()


# -- configuration (no model is loaded) ---------------------------------------------------------


async def test_cuda_without_a_gpu_is_a_config_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    backend = TransformersBackend(device="cuda", data_dir=tmp_path)
    with pytest.raises(ModelConfigError, match="DESKMATE_DEVICE=cuda") as err:
        await backend.load()
    assert "DESKMATE_DEVICE=cpu" in str(err.value)  # the fix is in the message


async def test_missing_model_path(tmp_path: Path) -> None:
    backend = TransformersBackend(model=str(tmp_path / "nope.gguf"), data_dir=tmp_path)
    with pytest.raises(ModelNotFound, match="no such file"):
        await backend.load()


async def test_file_that_is_not_gguf(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0" * 16)
    backend = TransformersBackend(model=str(weights), data_dir=tmp_path)
    with pytest.raises(ModelConfigError, match=r"not a \.gguf file"):
        await backend.load()


async def test_directory_without_config(tmp_path: Path) -> None:
    backend = TransformersBackend(model=str(tmp_path), data_dir=tmp_path)
    with pytest.raises(ModelNotFound, match=r"without config\.json"):
        await backend.load()


def test_unknown_quantization_is_refused_at_construction() -> None:
    with pytest.raises(ModelConfigError, match="DESKMATE_QUANTIZATION"):
        TransformersBackend(quantization="3bit")


async def test_unsupported_quantization_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        loading,
        "_bitsandbytes_problem",
        lambda *_: "the installed bitsandbytes has no 4bit support for cpu",
    )
    backend = TransformersBackend(quantization="4bit", device="cpu", data_dir=tmp_path)
    with pytest.raises(ModelConfigError) as err:
        await backend.load()
    message = str(err.value)
    assert "DESKMATE_QUANTIZATION=4bit cannot be used on cpu" in message
    assert "DESKMATE_ALLOW_QUANTIZATION_FALLBACK=true" in message
    assert not (tmp_path / "models").exists()  # refused before any conversion


def test_bitsandbytes_probe_on_this_machine() -> None:
    import torch

    pytest.importorskip("bitsandbytes")
    # bitsandbytes >= 0.45 runs both kinds on CPU; a device it cannot use is reported.
    assert loading._bitsandbytes_problem("4bit", "cpu", torch) is None
    assert loading._bitsandbytes_problem("8bit", "cpu", torch) is None
    if not torch.cuda.is_available():
        problem = loading._bitsandbytes_problem("4bit", "cuda", torch)
        assert problem is not None
        assert "4bit" in problem
        assert "cuda" in problem


# -- the real embedded model ---------------------------------------------------------------------

PROMPTS = [
    _request("What is the capital of France?"),
    _request("hi", system=None),  # no system message: the template adds its own
    _request("How do I reset my password? I tried the link in the email but it had expired."),
    _request("Name three colours of the rainbow.", max_new_tokens=12),
    _request(
        "My order 12345 has not arrived after two weeks and the tracking page says it is "
        "still in the warehouse. Can you check what happened and tell me when it will ship?",
        system=SYSTEM + " Be polite and mention that a human agent can follow up.",
    ),
    _request("Write a haiku about the sea.", max_new_tokens=32),
]


@pytest.mark.model
async def test_embedded_model_answers(embedded_backend: TransformersBackend) -> None:
    assert isinstance(embedded_backend, Backend)
    assert embedded_backend.loaded_info["device"] == "cpu"
    assert embedded_backend.context_window == 2048  # 8192 in the config, capped on CPU
    deltas: list[TextDelta] = [d async for d in embedded_backend.stream(PROMPTS[0])]
    text = "".join(d.text for d in deltas)
    assert "Paris" in text
    assert len([d for d in deltas if d.text]) > 3  # streamed, not delivered at once
    usage = deltas[-1].usage
    assert usage is not None
    assert 20 < usage.prompt_tokens < 60
    assert 0 < usage.completion_tokens <= 24


@pytest.mark.model
async def test_batching_gives_each_request_its_solo_answer(
    embedded_backend: TransformersBackend,
) -> None:
    alone = [await _text(embedded_backend, request) for request in PROMPTS]
    assert all(alone)
    assert len(set(alone)) == len(alone)

    # Half start together; the rest join the running batch once it is producing text.
    first_wave = [asyncio.create_task(_text(embedded_backend, r)) for r in PROMPTS[:3]]
    async with asyncio.timeout(60):
        while (stats := embedded_backend.stats()) is None or stats.running == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
    second_wave = [asyncio.create_task(_text(embedded_backend, r)) for r in PROMPTS[3:]]
    together = await asyncio.gather(*first_wave, *second_wave)

    assert together == alone


@pytest.fixture(scope="module")
def plain_model(embedded_backend: TransformersBackend) -> tuple[Any, Any]:
    """The tokenizer and the float32 model of the embedded backend's folder, loaded
    by transformers itself: what the backend's answers and scores are checked against."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = str(embedded_backend.loaded_info["model_dir"])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return tokenizer, model


@pytest.mark.model
async def test_greedy_output_matches_transformers_generate(
    embedded_backend: TransformersBackend, plain_model: tuple[Any, Any]
) -> None:
    import torch

    tokenizer, model = plain_model
    request = PROMPTS[2]
    ids = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in request.messages],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=request.sampling.max_new_tokens,
            do_sample=False,
            repetition_penalty=request.sampling.repetition_penalty,
        )
    expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert await _text(embedded_backend, request) == expected


@pytest.mark.model
def test_the_shared_prefix_runs_through_the_question_s_role_marker(
    embedded_backend: TransformersBackend,
) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from llm.transformers.engine import TorchEngine

    tokenizer = AutoTokenizer.from_pretrained(str(embedded_backend.loaded_info["model_dir"]))
    tiny = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        eos_token_id=tokenizer.eos_token_id,
    )
    engine = TorchEngine(LlamaForCausalLM(tiny).eval(), tokenizer, device="cpu")
    system = ChatMessage("system", SYSTEM)

    def encode(question: str) -> tuple[list[int], int]:
        prompt = engine.encode_chat([system, ChatMessage("user", question)])
        return prompt.ids, prompt.shared_prefix

    (first, shared), (second, other) = encode("Where is my order?"), encode("Hello there")
    assert shared == other
    assert first[:shared] == second[:shared]
    assert first[shared] != second[shared]
    alone = tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM}], tokenize=False)
    assert tokenizer.decode(first[:shared]) == alone + "<|im_start|>user\n"
    # Whatever the question starts with, only tokens that are the prompt's are shared.
    for question in ("\n\n  indented", " x", "user"):
        ids, count = encode(question)
        assert 0 < count < len(ids)
        assert ids[:count] == first[:count]


@pytest.mark.model
async def test_timeout_and_cancellation_free_the_model(
    embedded_backend: TransformersBackend,
) -> None:
    long = _request("Write a long story about a dragon.", max_new_tokens=400, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(LLMTimeout):
        await _text(embedded_backend, long)
    assert time.monotonic() - started < 3

    task = asyncio.create_task(
        _text(embedded_backend, _request("Tell me a long story.", max_new_tokens=400))
    )
    async with asyncio.timeout(30):
        while (stats := embedded_backend.stats()) is None or stats.running == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5):
        while embedded_backend.stats().running:  # type: ignore[union-attr]  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert "Paris" in await _text(embedded_backend, PROMPTS[0])


@pytest.mark.model
def test_count_tokens_uses_the_model_vocabulary(embedded_backend: TransformersBackend) -> None:
    assert embedded_backend.count_tokens("Hello") == 1
    assert embedded_backend.count_tokens("Hello world, how are you?") == 7
    assert embedded_backend.count_tokens("") == 0


@pytest.mark.model
def test_quantized_4bit_on_cpu(model_data_dir: Path) -> None:
    pytest.importorskip("bitsandbytes")
    backend = TransformersBackend(quantization="4bit", data_dir=model_data_dir, max_batch_size=2)
    text = run_sync(_answer_once(backend))
    assert backend.loaded_info["quantization"] == "4bit"
    assert "Paris" in text


@pytest.mark.model
def test_quantization_fallback_loads_unquantized(
    model_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loading, "_bitsandbytes_problem", lambda *_: "no 8bit support for cpu")
    backend = TransformersBackend(
        quantization="8bit",
        allow_quantization_fallback=True,
        data_dir=model_data_dir,
        max_batch_size=2,
    )

    assert "Paris" in run_sync(_answer_once(backend))
    assert backend.loaded_info["quantization"] == "none"


def test_the_int8_cast_warning_flood_is_filtered(caplog: pytest.LogCaptureFixture) -> None:
    loading._quiet_bitsandbytes()
    loading._quiet_bitsandbytes()  # idempotent
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("MatMul8bitLt: inputs will be cast from %s to float16", "torch.float32")
        logger.warning("something else worth seeing")
    assert [r.getMessage() for r in caplog.records] == ["something else worth seeing"]
    assert len(logger.filters) == 1


@pytest.mark.model
async def test_loglikelihoods_match_a_plain_forward_pass(
    embedded_backend: TransformersBackend, plain_model: tuple[Any, Any]
) -> None:
    import torch

    assert isinstance(embedded_backend, Scorer)
    pairs = [
        ("The capital of France is", " Paris"),
        ("The capital of France is", " a banana split with extra cream"),
        ("Question: How long does shipping take?\nAnswer:", " Two to three working days."),
    ]
    scores = await embedded_backend.loglikelihoods(pairs)

    tokenizer, model = plain_model
    for (context, continuation), score in zip(pairs, scores, strict=True):
        head = tokenizer(context, add_special_tokens=False)["input_ids"]
        tail = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = model(torch.tensor([head + tail])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        expected = sum(float(logprobs[len(head) + i - 1, t]) for i, t in enumerate(tail))
        # Alone, unpadded, against padded in a batch of three.
        assert score == pytest.approx(expected, abs=1e-3)
    assert scores[0] > scores[1]
    assert await embedded_backend.loglikelihoods([]) == []


@pytest.mark.model
async def test_scoring_beside_generation_changes_neither(
    embedded_backend: TransformersBackend,
) -> None:
    alone = await _text(embedded_backend, PROMPTS[2])
    pair = [("The capital of France is", " Paris")]
    (score,) = await embedded_backend.loglikelihoods(pair)
    generation = asyncio.create_task(_text(embedded_backend, PROMPTS[2]))
    async with asyncio.timeout(60):
        while (stats := embedded_backend.stats()) is None or stats.running == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    during = [await embedded_backend.loglikelihoods(pair) for _ in range(3)]
    assert await generation == alone
    assert all(s == pytest.approx(score, abs=1e-4) for (s,) in during)


async def test_scoring_before_load_is_an_error(tmp_path: Path) -> None:
    backend = TransformersBackend(data_dir=tmp_path)
    with pytest.raises(LLMError, match="not loaded"):
        await backend.loglikelihoods([("a", "b")])
