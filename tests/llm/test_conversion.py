"""The GGUF conversion: reads what gguf reads, and warm starts never convert again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llm import gguf as deskmate_gguf
from llm.transformers import loading
from llm.transformers.conversion import faster_gguf_reading, plain_reader_class

gguf = pytest.importorskip("gguf")


def small_gguf(path: Path) -> Path:
    """A GGUF file with a vocabulary-like string array, scalars and two Q4_1 tensors."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_token_list([f"tok{i}" for i in range(300)])
    writer.add_token_scores([float(i) / 7 for i in range(300)])
    writer.add_string("general.name", "tiny")
    rng = np.random.default_rng(0)
    for name in ("blk.0.attn_q.weight", "token_embd.weight"):
        weights = rng.standard_normal((8, 64)).astype(np.float32)
        packed = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q4_1)
        writer.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.Q4_1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_fast_reader_reads_exactly_what_gguf_reads(tmp_path: Path) -> None:
    source = small_gguf(tmp_path / "tiny.gguf")
    slow = gguf.GGUFReader(source)
    fast = plain_reader_class(gguf.GGUFReader)(source)
    assert not isinstance(fast.data, np.memmap)
    assert list(fast.fields) == list(slow.fields)
    for name, field in slow.fields.items():
        other = fast.fields[name]
        assert other.types == field.types and other.data == field.data
        assert [p.tobytes() for p in other.parts] == [p.tobytes() for p in field.parts]
    assert [t.name for t in fast.tensors] == [t.name for t in slow.tensors]
    for mine, theirs in zip(fast.tensors, slow.tensors, strict=True):
        exact = gguf.quants.dequantize(theirs.data, theirs.tensor_type)
        assert np.array_equal(gguf.quants.dequantize(mine.data, mine.tensor_type), exact)


def test_one_conversion_parses_the_file_once_and_restores_gguf(tmp_path: Path) -> None:
    source = small_gguf(tmp_path / "tiny.gguf")
    original = gguf.GGUFReader
    with faster_gguf_reading():
        first = gguf.GGUFReader(source)
        assert gguf.GGUFReader(source) is first
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is gguf.get_tensor_name_map(
            gguf.MODEL_ARCH.LLAMA, 2
        )
    assert gguf.GGUFReader is original
    assert gguf.GGUFReader(source) is not first


def test_a_warm_start_reuses_the_converted_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = small_gguf(tmp_path / "tiny.gguf")
    data_dir = tmp_path / "data"
    converted: list[Path] = []

    def convert(src: Path, out: Path) -> None:
        converted.append(src)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(loading, "convert_gguf", convert)
    first = loading.find_model_dir(str(source), data_dir)
    assert converted == [source] and (first / "config.json").is_file()
    stamp = (first / "config.json").stat().st_mtime_ns
    assert loading.find_model_dir(str(source), data_dir) == first
    assert converted == [source]
    assert (first / "config.json").stat().st_mtime_ns == stamp
    assert first == deskmate_gguf.converted_dir(source, data_dir)


@pytest.mark.slow
def test_the_fast_conversion_equals_the_plain_one(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    from llm.transformers.conversion import convert_gguf_file

    source = deskmate_gguf.embedded_gguf_path()
    fast, plain = tmp_path / "fast", tmp_path / "plain"
    convert_gguf_file(source, fast, torch=torch, transformers=transformers, stage=lambda _: None)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    kwargs = {"dtype": torch.bfloat16}
    if hasattr(transformers, "GgufConfig"):
        kwargs["quantization_config"] = transformers.GgufConfig(dequantize=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, **kwargs
    )
    model.save_pretrained(plain)
    tokenizer.save_pretrained(plain)
    mine, theirs = load_file(fast / "model.safetensors"), load_file(plain / "model.safetensors")
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert (fast / "tokenizer.json").read_text() == (plain / "tokenizer.json").read_text()
    assert (fast / "config.json").read_text() == (plain / "config.json").read_text()
