"""Fixtures for the LLM tests: one real embedded model per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm.transformers_backend import TransformersBackend
from tests.llm.support import run_sync


@pytest.fixture(scope="session")
def model_data_dir(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the converted embedded model is kept between test sessions.

    Converting the GGUF file takes ~30 s, loading the converted folder ~3 s:
    pytest's cache directory (or ``DESKMATE_TEST_MODEL_CACHE``) keeps it.
    """
    configured = os.environ.get("DESKMATE_TEST_MODEL_CACHE")
    if configured:
        return Path(configured)
    cache = getattr(pytestconfig, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("deskmate-models"))
    return tmp_path_factory.mktemp("deskmate-models")


@pytest.fixture(scope="session")
def embedded_backend(model_data_dir: Path) -> Iterator[TransformersBackend]:
    """The embedded model in float32 (greedy output is then batch-independent)."""
    backend = TransformersBackend(
        data_dir=model_data_dir, dtype="float32", max_batch_size=8, max_queue=8
    )
    run_sync(backend.load())
    yield backend
    run_sync(backend.aclose())
