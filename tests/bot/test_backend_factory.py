"""Choosing the backend from settings in the composition root (nothing is loaded)."""

from __future__ import annotations

import sys
from pathlib import Path

from bot.app import create_backend
from bot.settings import Settings
from llm.base import Backend
from llm.openai_http import OpenAIBackend
from llm.transformers import TransformersBackend


def test_llm_url_selects_the_http_backend() -> None:
    settings = Settings.from_env(
        {
            "DESKMATE_LLM_URL": "http://gpu-node:8000/v1",
            "DESKMATE_LLM_API_KEY": "secret",
            "DESKMATE_LLM_MODEL": "Qwen/Qwen2.5-7B-Instruct",
        }
    )
    backend = create_backend(settings)
    assert isinstance(backend, OpenAIBackend)
    assert isinstance(backend, Backend)
    assert backend.name == "openai:Qwen/Qwen2.5-7B-Instruct"


def test_default_is_the_embedded_local_model(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "DESKMATE_DATA_DIR": str(tmp_path),
            "DESKMATE_QUANTIZATION": "4bit",
            "DESKMATE_MAX_BATCH": "12",
            "DESKMATE_DTYPE": "float32",
        }
    )
    backend = create_backend(settings)
    assert isinstance(backend, TransformersBackend)
    assert isinstance(backend, Backend)
    assert backend.name == "transformers:embedded"
    assert backend._quantization == "4bit"
    assert backend._max_batch == 12
    assert backend._dtype_spec == "float32"
    assert backend._data_dir == tmp_path


def test_creating_the_local_backend_does_not_import_torch() -> None:
    if "torch" in sys.modules:
        # Another test of this session imported it already; the check needs a fresh interpreter.
        import subprocess

        code = (
            "import sys; from bot.settings import Settings; from bot.app import create_backend;"
            "create_backend(Settings()); assert 'torch' not in sys.modules, 'torch imported'"
        )
        subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
        return
    create_backend(Settings())
    assert "torch" not in sys.modules
