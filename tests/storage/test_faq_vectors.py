"""Vectors of FAQ texts under a second embedding model, kept by model and text digest."""

from __future__ import annotations

from storage.faq_vectors import text_digest
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository


async def test_text_vectors_are_kept_per_model_and_a_second_store_changes_nothing(
    repository: Repository,
) -> None:
    repo = KnowledgeRepository(repository.db)
    first, second = text_digest("Hur lång är leveranstiden?"), text_digest("退货政策是什么？")
    await repo.set_text_vectors("model-a", {first: b"\x01" * 8, second: b"\x02" * 8})
    # Another process that embedded the same text first: its row stays.
    await repo.set_text_vectors("model-a", {first: b"\x09" * 8})
    await repo.set_text_vectors("model-b", {first: b"\x03" * 8})
    assert await repo.text_vectors("model-a", [first, second, text_digest("?")]) == {
        first: b"\x01" * 8,
        second: b"\x02" * 8,
    }
    assert await repo.text_vectors("model-b", [first, second]) == {first: b"\x03" * 8}
    assert await repo.text_vectors("model-c", []) == {}
