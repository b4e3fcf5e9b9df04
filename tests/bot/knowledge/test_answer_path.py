"""Every plan that needs the model goes through the manager's one generation
path: grounded answers and drafts stream, stop on /reset, record their tokens
and fail with the same messages as plain chat. A failing knowledge base never
lets the model answer in ``faq`` mode."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.policy import Policy
from bot.manager import TIMEOUT_MESSAGE, ConversationManager, busy_message
from bot.messages import say
from bot.types import Reply
from llm.base import LLMBusy, LLMTimeout
from llm.embeddings import HashingEmbedder
from llm.fake import FakeBackend
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository
from tests.conftest import make_manager
from tests.support import Rendered, make_inbound

CSV = (
    "id,question,answer,source\n"
    "hours-1,What are your opening hours?,We are open 9-17 on weekdays.,Contact page\n"
    'refund-1,How do I get a refund?,"Reply with your order number, we refund in 5 days.",'
    "Refund policy\n"
)
# Routed to the grounded path by the thresholds below (HashingEmbedder scores).
GROUNDED_QUESTION = "refund please, how"
GROUNDED_ANSWER = "Reply with your order number [1]. We refund it in 5 days [1]."
ADMIN = {"user": "admin"}


@pytest.fixture
async def setup(
    repository: Repository, backend: FakeBackend, tmp_path: Path
) -> tuple[ConversationManager, KnowledgeBase]:
    kb = KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
        background=(),
        policy=Policy(
            verbatim_score=0.5, grounded_score=0.25, fallback_verbatim_score=0.35, clarify=False
        ),
        refresh_interval=0.0,
    )
    path = tmp_path / "faq.csv"
    path.write_text(CSV, encoding="utf-8")
    await kb.import_file(path)
    decision = await kb.decide(GROUNDED_QUESTION, "t1")
    assert decision.path == "grounded", decision
    return make_manager(repository, backend, knowledge=kb), kb


async def test_grounded_answer_streams_and_records_its_tokens(
    setup: tuple[ConversationManager, KnowledgeBase],
    backend: FakeBackend,
    repository: Repository,
) -> None:
    manager, kb = setup
    backend.enqueue(GROUNDED_ANSWER)
    seen = Rendered()
    reply = await manager.handle(make_inbound(GROUNDED_QUESTION), seen)
    assert reply.text.startswith(GROUNDED_ANSWER)
    assert "Sources:\n[1] How do I get a refund? (FAQ refund-1, Refund policy)" in reply.text
    # The first sentence was shown before the model had finished the second.
    assert len(seen.chunks[0]) > 1
    assert seen.chunks[0][0] == "Reply with your order number [1]."
    assert (await kb.repository.answers(limit=1))[0]["path"] == "grounded"
    stats = await repository.stats()
    assert stats.prompt_tokens > 0 and stats.completion_tokens == len(GROUNDED_ANSWER.split())


async def test_reset_stops_a_grounded_answer_in_progress(
    setup: tuple[ConversationManager, KnowledgeBase], backend: FakeBackend
) -> None:
    manager, _ = setup
    long_answer = " ".join(f"Reply with your order number [1]. {i}" for i in range(100))
    backend.enqueue(long_answer, chunk_delay=0.01)
    shown = asyncio.Event()

    async def watch(reply: Reply) -> None:
        async for _ in reply:
            shown.set()

    answer = asyncio.create_task(manager.handle(make_inbound(GROUNDED_QUESTION), watch))
    await asyncio.wait_for(shown.wait(), timeout=10)  # the first checked sentence is out
    await asyncio.wait_for(manager.handle(make_inbound("/reset"), Rendered()), timeout=5)
    reply = await answer
    assert reply.text.endswith("(stopped)")
    assert reply.text.startswith("Reply with your order number [1].")
    assert len(reply.text.split()) < len(long_answer.split()) / 2
    assert "Sources:" not in reply.text


@pytest.mark.parametrize(
    ("error", "expected"),
    [(LLMBusy("queue full", position=3), busy_message(3)), (LLMTimeout("slow"), TIMEOUT_MESSAGE)],
)
async def test_llm_failure_in_a_grounded_answer_reads_as_in_chat(
    setup: tuple[ConversationManager, KnowledgeBase],
    backend: FakeBackend,
    error: Exception,
    expected: str,
) -> None:
    manager, _ = setup
    backend.enqueue(error=error)
    grounded = await manager.handle(make_inbound(GROUNDED_QUESTION), Rendered())
    assert grounded.failed and grounded.text == expected

    await manager.handle(make_inbound("/mode assistant", chat="c2", **ADMIN), Rendered())
    backend.enqueue(error=error)
    chat = await manager.handle(
        make_inbound("Where is the nearest volcano?", chat="c2"), Rendered()
    )
    assert chat.failed and chat.text == expected
    assert len(backend.requests) == 2


async def test_a_failing_knowledge_base_in_faq_mode_escalates_without_the_model(
    setup: tuple[ConversationManager, KnowledgeBase],
    backend: FakeBackend,
    repository: Repository,
) -> None:
    manager, kb = setup
    await manager.handle(make_inbound("/mode faq", **ADMIN), Rendered())
    # A real fault: the entries' table is gone, so every search fails in the database.
    cascade = " CASCADE" if repository.dialect == "postgresql" else ""
    await repository.db.run(lambda conn: conn.execute(text(f"DROP TABLE faq_entries{cascade}")))
    kb.retriever.invalidate()
    seen = Rendered()
    reply = await manager.handle(make_inbound("What are your opening hours?"), seen)
    escalation = say("knowledge.escalation")
    assert seen.replies == [escalation] and reply.text == escalation
    assert backend.requests == []
    escalated = await kb.repository.escalations()
    assert [e.question for e in escalated] == ["What are your opening hours?"]
    assert "knowledge base failed" in escalated[0].reason


async def test_drafts_stream_through_the_same_path(
    setup: tuple[ConversationManager, KnowledgeBase], backend: FakeBackend
) -> None:
    manager, kb = setup
    backend.enqueue("Subject: Maintenance\n\nWe will be down on Sunday.")
    seen = Rendered()
    await manager.handle(make_inbound("/draft email maintenance on Sunday", **ADMIN), seen)
    assert seen.replies[0].startswith("DRAFT") and len(seen.chunks[0]) > 2
    assert "down on Sunday" in (await kb.open_draft("test:t1:c1:") or "")
    backend.enqueue(error=LLMBusy("queue full", position=None))
    failed = await manager.handle(make_inbound("shorter", **ADMIN), Rendered())
    assert failed.failed and failed.text == busy_message(None)
    # The draft a failed revision leaves is the last good one.
    assert "down on Sunday" in (await kb.open_draft("test:t1:c1:") or "")
