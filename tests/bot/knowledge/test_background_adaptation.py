"""Edits in chat adapt the embedding model once, in the background (model-free)."""

from __future__ import annotations

import asyncio

import pytest

from bot.knowledge import tuning
from bot.knowledge.knowledge_base import KnowledgeBase
from llm.embeddings import HashingEmbedder
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository


async def test_a_batch_of_edits_adapts_once_after_the_last(
    repository: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    kb = KnowledgeBase(
        repository=KnowledgeRepository(repository.db), embedder=HashingEmbedder(), background=()
    )
    tuner = tuning.BackgroundTuner(kb)
    assert not tuner.schedule()  # a hashing model cannot be adapted
    calls: list[float] = []

    async def fake_tune(kb_: KnowledgeBase, **_: object) -> tuning.TuneReport:
        calls.append(asyncio.get_running_loop().time())
        return tuning.TuneReport("m", 20, 20, 1.0, None)

    monkeypatch.setattr(tuning, "tune", fake_tune)
    monkeypatch.setattr(tuner, "can_adapt", lambda: True)
    start = asyncio.get_running_loop().time()
    assert tuner.schedule(delay=0.05)
    await asyncio.sleep(0.03)
    assert tuner.schedule(delay=0.05)  # moves the time on
    assert tuner.task is not None
    await tuner.task
    assert len(calls) == 1 and calls[0] - start >= 0.08
