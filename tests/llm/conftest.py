"""Fixtures for the LLM tests: one real embedded model per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llm.transformers import TransformersBackend
from tests.llm.support import run_sync


@pytest.fixture(scope="session")
def embedded_backend(model_data_dir: Path) -> Iterator[TransformersBackend]:
    """The embedded model in float32 on the eager step (greedy output is then batch-independent)."""
    backend = TransformersBackend(
        data_dir=model_data_dir,
        dtype="float32",
        max_batch_size=8,
        max_queue=8,
        fast_decode="off",
    )
    run_sync(backend.load())
    yield backend
    run_sync(backend.aclose())
