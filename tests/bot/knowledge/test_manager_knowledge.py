"""The knowledge base behind the conversation manager: import a CSV, ask in
chat, get the curated answer with its source; admin commands; modes; drafts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.policy import Policy
from bot.manager import ConversationManager
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


@pytest.fixture
async def setup(
    repository: Repository, backend: FakeBackend, tmp_path: Path
) -> tuple[ConversationManager, KnowledgeBase]:
    kb = KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
        background=(),
        policy=Policy(verbatim_score=0.5, grounded_score=0.25, fallback_verbatim_score=0.35),
        refresh_interval=0.0,
    )
    path = tmp_path / "faq.csv"
    path.write_text(CSV, encoding="utf-8")
    report = await kb.import_file(path)
    assert report.created == 2
    return make_manager(repository, backend, knowledge=kb), kb


async def ask(manager: ConversationManager, text: str, **kw: str) -> str:
    seen = Rendered()
    reply = await manager.handle(make_inbound(text, **kw), seen)
    assert seen.replies == [reply.text]
    return reply.text


async def test_reworded_question_gets_the_curated_answer_with_source(
    setup: tuple[ConversationManager, KnowledgeBase], backend: FakeBackend
) -> None:
    manager, kb = setup
    text = await ask(manager, "what are the opening hours on weekdays?")
    assert text.startswith("We are open 9-17 on weekdays.")
    assert "Source: Contact page (FAQ hours-1)" in text
    # the model was not asked: a queued answer is still waiting
    backend.enqueue("model text")
    text = await ask(manager, "Where is the nearest volcano?")
    assert "human colleague" in text
    assert [e.question for e in await kb.repository.escalations()] == [
        "Where is the nearest volcano?"
    ]


async def test_admin_faq_commands(setup: tuple[ConversationManager, KnowledgeBase]) -> None:
    manager, kb = setup
    refused = await ask(manager, "/faq list")
    assert "only for this bot's admins" in refused
    admin = {"user": "admin"}
    added = await ask(manager, "/faq add Do you ship abroad? | Yes, to the EU. | Shipping", **admin)
    assert added.startswith("Added FAQ entry")
    listed = await ask(manager, "/faq list", **admin)
    assert "hours-1: What are your opening hours?" in listed and "Do you ship abroad?" in listed
    found = await ask(manager, "/faq search shipping abroad", **admin)
    assert "Do you ship abroad?" in found.splitlines()[1]
    answer = await ask(manager, "do you ship abroad?")
    assert answer.startswith("Yes, to the EU.")
    removed = await ask(manager, "/faq remove hours-1", **admin)
    assert removed == "Removed FAQ entry hours-1: What are your opening hours?"
    assert "no FAQ entry hours-1" in await ask(manager, "/faq remove hours-1", **admin)
    here = await ask(manager, "/faq add --here Secret? | Only tenant t1. ", **admin)
    assert here.startswith("Added")
    assert [e.question for e in await kb.repository.entries(tenant="t1")] == ["Secret?"]
    assert "Usage" in await ask(manager, "/faq", **admin)


async def test_modes(
    setup: tuple[ConversationManager, KnowledgeBase], backend: FakeBackend
) -> None:
    manager, _ = setup
    admin = {"user": "admin"}
    assert "Mode here: support" in await ask(manager, "/mode", **admin)
    assert await ask(manager, "/mode assistant", **admin) == (
        "Mode set to assistant in this conversation."
    )
    backend.enqueue("Volcanoes are mountains.")
    assert await ask(manager, "Where is the nearest volcano?") == "Volcanoes are mountains."
    # a matching question is still answered from the FAQ
    assert (await ask(manager, "What are your opening hours?")).startswith("We are open")
    await ask(manager, "/mode faq --tenant", **admin)
    await ask(manager, "/mode default", **admin)
    assert "Mode here: faq" in await ask(manager, "/mode", **admin)
    backend.enqueue("Invented refund policy [1].")
    text = await ask(manager, "refund please, how")
    assert "Invented" not in text


async def test_draft_and_revisions(
    setup: tuple[ConversationManager, KnowledgeBase], backend: FakeBackend
) -> None:
    manager, kb = setup
    admin = {"user": "admin"}
    assert "only for this bot's agents and admins" in await ask(manager, "/draft email hi")
    assert "unknown kind" in await ask(manager, "/draft poem about cats", **admin)
    backend.enqueue("Subject: Maintenance\n\nWe will be down on Sunday.")
    first = await ask(manager, "/draft email maintenance on Sunday 2-4am --tone formal", **admin)
    assert first.startswith("DRAFT")
    assert "(email, formal, medium)" in first and "down on Sunday" in first
    backend.enqueue("Subject: Maintenance\n\nDown Sunday.")
    second = await ask(manager, "shorter", **admin)
    assert "(email, formal, short)" in second and "Down Sunday." in second
    assert "Draft closed" in await ask(manager, "/draft done", **admin)
    assert (await ask(manager, "What are your opening hours?")).startswith("We are open")
    await ask(manager, "/persona You are Acme's cheerful helper.", **admin)
    assert await kb.persona("t1") == "You are Acme's cheerful helper."


async def test_persona_is_the_system_prompt_of_plain_chat(
    setup: tuple[ConversationManager, KnowledgeBase], backend: FakeBackend
) -> None:
    manager, _ = setup
    admin = {"user": "admin"}
    await ask(manager, "/mode assistant --tenant", **admin)
    backend.enqueue("Volcanoes are mountains.")
    await ask(manager, "Where is the nearest volcano?")
    # Every system prompt closes with the output guard's canary line.
    marker = manager.generation.guard.marker
    assert backend.requests[-1].messages[0].content == f"{manager.system_prompt}\n\n{marker}"

    await ask(manager, "/persona You are Ava, Acme's cheerful helper.", **admin)
    backend.enqueue("Hi, Ava here!")
    assert await ask(manager, "Who are you?") == "Hi, Ava here!"
    system = backend.requests[-1].messages[0]
    assert (system.role, system.content) == (
        "system",
        f"You are Ava, Acme's cheerful helper.\n\n{marker}",
    )
    # Another tenant keeps the configured prompt.
    await ask(manager, "/mode assistant --tenant", tenant="t2", chat="c2", **admin)
    backend.enqueue("Volcanoes again.")
    await ask(manager, "Where is the nearest volcano?", tenant="t2", chat="c2")
    assert backend.requests[-1].messages[0].content == f"{manager.system_prompt}\n\n{marker}"
