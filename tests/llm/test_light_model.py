"""The Llama without transformers: same tokens, same logits, and no transformers import."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm.base import ChatMessage, SamplingParams
from llm.scheduler import NewSequence
from llm.transformers import light
from llm.transformers.engine import TorchEngine
from llm.transformers.fast_step import FastDecoder
from llm.transformers.loading import find_model_dir

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[2]
GREEDY = SamplingParams(max_new_tokens=10, temperature=0.0, repetition_penalty=1.15)
SYSTEM = ChatMessage("system", "You are the help desk assistant of ACME. Answer briefly.")
# Longer than the cache layers' spare room (64 positions), prefix and question alike.
LONG = ChatMessage(
    "system",
    "You are the help desk assistant of ACME Corporation. "
    + "Answer in the customer's language, politely and briefly, from the company's facts. " * 6,
)
CONVERSATIONS = [
    [SYSTEM, ChatMessage("user", "Hello! What can you help me with?")],
    [SYSTEM, ChatMessage("user", "Mein Drucker druckt nicht. Was tun?")],
    [ChatMessage("user", "我的密码忘了，怎么办？ 🙂")],
    [
        SYSTEM,
        ChatMessage("user", "How do I reset my password?"),
        ChatMessage("assistant", "Open Settings, then Security."),
        ChatMessage("user", "And then?"),
    ],
    [LONG, ChatMessage("user", "My laptop does not start after the update. " * 8)],
    [ChatMessage("user", "Can I return a product I bought online last month? " * 8)],
]


@pytest.fixture(scope="module")
def model_dir(model_data_dir: Path) -> Path:
    return find_model_dir("embedded", model_data_dir)


@pytest.fixture(scope="module")
def both(model_dir: Path) -> Iterator[tuple[Any, Any, Any, Any]]:
    """(light model, light tokenizer, transformers model, transformers tokenizer), float32."""
    model, tokenizer = light.load(model_dir)
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="sdpa"
    ).eval()
    reference_tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    yield model, tokenizer, reference, reference_tokenizer


def _copy_model(source: Path, target: Path) -> Path:
    """The model folder with its own config files and links to the weights."""
    target.mkdir()
    for path in source.iterdir():
        if path.suffix == ".safetensors":
            (target / path.name).symlink_to(path)
        else:
            shutil.copy(path, target / path.name)
    return target


def _engine(model: Any, tokenizer: Any) -> TorchEngine:
    return TorchEngine(model, tokenizer, device="cpu")


def _greedy_batch(engine: TorchEngine, prompts: list[Any], steps: int) -> dict[int, list[int]]:
    """Greedy tokens of every prompt, all prefilled and decoded together (padded rows)."""
    entries = [
        NewSequence(i, prompt.ids, GREEDY, prompt.shared_prefix) for i, prompt in enumerate(prompts)
    ]
    out = {seq: [token] for seq, token in engine.add(entries).items()}
    for _ in range(steps):
        for seq, token in engine.step().items():
            out[seq].append(token)
    return out


def test_prompts_and_decoding_match_transformers_tokenizer(both: tuple[Any, ...]) -> None:
    model, tokenizer, reference, reference_tokenizer = both
    mine, theirs = _engine(model, tokenizer), _engine(reference, reference_tokenizer)
    assert mine.eos_token_ids == theirs.eos_token_ids
    for messages in CONVERSATIONS:
        prompt = mine.encode_chat(messages)
        assert prompt == theirs.encode_chat(messages)
        assert mine.decode(prompt.ids) == theirs.decode(prompt.ids)
    assert len(mine.clone_rust_tokenizer().encode("Grüße 你好").ids) > 2


def test_logits_match_transformers(both: tuple[Any, ...]) -> None:
    model, tokenizer, reference, _ = both
    ids = torch.tensor([_engine(model, tokenizer).encode_chat(CONVERSATIONS[0]).ids])
    with torch.inference_mode():
        mine = model(input_ids=ids).logits
        theirs = reference(input_ids=ids).logits
    assert mine.shape == theirs.shape
    assert torch.allclose(mine, theirs, atol=2e-3, rtol=1e-3), (mine - theirs).abs().max()


def test_padded_batch_with_shared_prefix_decodes_like_transformers(
    both: tuple[Any, ...],
) -> None:
    """Prompts of different lengths, some sharing a cached system prefix, some without."""
    model, tokenizer, reference, reference_tokenizer = both
    mine, theirs = _engine(model, tokenizer), _engine(reference, reference_tokenizer)
    prompts = [mine.encode_chat(messages) for messages in CONVERSATIONS[:3]]
    prompts += [mine.encode_chat(messages) for messages in CONVERSATIONS[4:]]
    assert prompts[0].shared_prefix and prompts[1].shared_prefix
    assert prompts[3].shared_prefix > 64 and len(prompts[4].ids) > 64
    expected = _greedy_batch(theirs, prompts, steps=GREEDY.max_new_tokens)
    assert _greedy_batch(mine, prompts, steps=GREEDY.max_new_tokens) == expected
    # A second wave joins the running batch (merge, padding of the older rows), then one leaves.
    later = mine.encode_chat(CONVERSATIONS[3])
    mine_first = mine.add([NewSequence(9, later.ids, GREEDY, later.shared_prefix)])
    theirs_first = theirs.add([NewSequence(9, later.ids, GREEDY, later.shared_prefix)])
    assert mine_first == theirs_first
    mine.remove([1])
    theirs.remove([1])
    for _ in range(4):
        assert mine.step() == theirs.step()


def test_scores_match_transformers(both: tuple[Any, ...]) -> None:
    model, tokenizer, reference, reference_tokenizer = both
    pairs = [("The capital of France is", " Paris"), ("2 + 2 =", " 4, of course")]
    mine = _engine(model, tokenizer).loglikelihoods(pairs)
    theirs = _engine(reference, reference_tokenizer).loglikelihoods(pairs)
    assert mine == pytest.approx(theirs, abs=1e-2)
    assert mine[0] > -5


def test_packed_step_builds_on_the_light_model(both: tuple[Any, ...], tmp_path: Path) -> None:
    model, tokenizer, reference, _ = both
    packed = FastDecoder.build(model, cache_file=tmp_path / "packed.pt")
    assert packed.build_seconds > 0
    # The same packing as from transformers' model: the cache file is interchangeable.
    again = FastDecoder.build(reference, cache_file=tmp_path / "packed.pt")
    engine = _engine(model, tokenizer)
    engine.use_fast_step(again, max_rows=4)
    prompt = engine.encode_chat(CONVERSATIONS[0])
    tokens = _greedy_batch(engine, [prompt], steps=6)[0]
    eager = _greedy_batch(_engine(model, tokenizer), [prompt], steps=6)[0]
    # Int4 weights: the first tokens agree with the float32 step on this prompt.
    assert tokens[:3] == eager[:3]


def test_unsupported_models_go_through_transformers(model_dir: Path, tmp_path: Path) -> None:
    assert (
        light.unsupported(model_dir, device="cpu", dtype=torch.float32, quantization="none") is None
    )
    assert light.unsupported(model_dir, device="cpu", dtype=torch.bfloat16, quantization="none")
    assert light.unsupported(model_dir, device="cuda", dtype=torch.float32, quantization="none")
    assert light.unsupported(model_dir, device="cpu", dtype=torch.float32, quantization="4bit")
    copy = _copy_model(model_dir, tmp_path / "scaled")
    config = json.loads((copy / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}
    (copy / "config.json").write_text(json.dumps(config))
    why = light.unsupported(copy, device="cpu", dtype=torch.float32, quantization="none")
    assert why is not None and "rotary" in why
    config.update(model_type="qwen2", rope_parameters={"rope_theta": 1e6})
    (copy / "config.json").write_text(json.dumps(config))
    assert "Llama" in str(
        light.unsupported(copy, device="cpu", dtype=torch.float32, quantization="none")
    )


def test_weights_unlike_the_config_are_refused(model_dir: Path, tmp_path: Path) -> None:
    """Caught at load (where ``load_model`` turns to transformers), not mid-answer."""
    from safetensors.torch import save_file

    copy = _copy_model(model_dir, tmp_path / "odd")
    save_file(
        {"model.layers.0.self_attn.q_proj.bias": torch.zeros(576)}, copy / "extra.safetensors"
    )
    with pytest.raises(ValueError, match="does not use"):
        light.load(copy)
    (copy / "extra.safetensors").unlink()
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "num_key_value_heads": 9}))
    with pytest.raises(ValueError, match="k_proj"):
        light.load(copy)


_ANSWER_WITHOUT_TRANSFORMERS = """
import asyncio, sys
from pathlib import Path
from llm.base import ChatMessage, GenerationRequest, SamplingParams
from llm.transformers import TransformersBackend

async def main() -> None:
    backend = TransformersBackend(data_dir=Path(sys.argv[1]), dtype="float32", fast_decode="off")
    await backend.load()
    request = GenerationRequest(
        messages=[ChatMessage("user", "Hello!")],
        sampling=SamplingParams(max_new_tokens=4, temperature=0.0),
    )
    text = "".join([delta.text async for delta in backend.stream(request)])
    print(backend.loaded_info["implementation"], bool(text.strip()))
    print(sorted(name for name in sys.modules if name.split(".")[0] == "transformers"))
    await backend.aclose()

asyncio.run(main())
"""


def test_an_answer_is_served_without_importing_transformers(model_data_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _ANSWER_WITHOUT_TRANSFORMERS, str(model_data_dir)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-2:] == ["light True", "[]"]
