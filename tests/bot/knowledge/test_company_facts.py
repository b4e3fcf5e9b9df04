"""Questions about the company's own facts with no knowledge source behind
them: escalated, never answered by the model, in support mode only."""

from __future__ import annotations

import time

import pytest

from bot.app import create_company_facts
from bot.errors import ConfigError
from bot.handoff.config import HandoffSettings, parse_spaces
from bot.handoff.desk import HelpDesk
from bot.handoff.worker import OutboxWorker
from bot.knowledge.company_facts import CompanyFacts, company_fact_subject
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.manager import ConversationManager
from bot.messages import say
from bot.settings import Settings
from llm.embeddings import HashingEmbedder
from llm.fake import FakeBackend
from storage.handoff_repo import HandoffRepository
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository
from tests.bot.handoff.test_handoff import FakeChannel
from tests.conftest import make_manager
from tests.support import Rendered, make_inbound

COMPANY = (
    "What are your opening hours?",
    "How do I reset my password?",
    "how much is the premium plan",
    "can I get my money back for order 1182?",
    "refund status",
)
GENERAL = (
    "What is the capital of Australia?",
    "Help me write a thank-you note for my neighbour",
    "hi, how are you?",
    "What does a refund mean in accounting?",
)


async def ask(manager: ConversationManager, text: str, **kw: str) -> str:
    seen = Rendered()
    await manager.handle(make_inbound(text, **kw), seen)
    return "".join(seen.replies)


def knowledge_base(repository: Repository) -> KnowledgeBase:
    return KnowledgeBase(
        repository=KnowledgeRepository(repository.db), embedder=HashingEmbedder(), background=()
    )


@pytest.mark.parametrize("question", COMPANY)
async def test_no_knowledge_company_facts_are_not_made_up(
    sqlite_repository: Repository, backend: FakeBackend, question: str
) -> None:
    manager = make_manager(sqlite_repository, backend, company_facts=CompanyFacts())
    backend.enqueue("We are open 8am-5pm (Monday - Friday).")
    assert await ask(manager, question) == say("knowledge.escalation")
    assert backend.requests == []


@pytest.mark.parametrize("question", GENERAL)
async def test_general_questions_are_still_the_models(
    sqlite_repository: Repository, backend: FakeBackend, question: str
) -> None:
    manager = make_manager(sqlite_repository, backend, company_facts=CompanyFacts())
    assert await ask(manager, question) == f"echo: {question}"


async def test_an_empty_knowledge_base_in_support_mode_escalates_and_records(
    repository: Repository, backend: FakeBackend
) -> None:
    kb = knowledge_base(repository)
    manager = make_manager(repository, backend, knowledge=kb, company_facts=CompanyFacts())
    assert await ask(manager, "Do you ship to Canada?") == say("knowledge.escalation")
    [escalation] = await kb.repository.escalations()
    assert escalation.question == "Do you ship to Canada?"
    assert escalation.reason == "company facts (orders) with no knowledge source"
    assert backend.requests == []

    # Assistant mode lets the model talk about anything, as before.
    await ask(manager, "/mode assistant --tenant", user="admin")
    assert await ask(manager, "Do you ship to Canada?") == "echo: Do you ship to Canada?"


async def test_the_setting_answer_keeps_the_old_behaviour(
    sqlite_repository: Repository, backend: FakeBackend
) -> None:
    manager = make_manager(sqlite_repository, backend, knowledge=knowledge_base(sqlite_repository))
    assert await ask(manager, "What are your opening hours?") == (
        "echo: What are your opening hours?"
    )


async def test_a_connected_desk_gets_a_ticket_for_the_question(
    sqlite_repository: Repository, backend: FakeBackend
) -> None:
    desk = HelpDesk(
        settings=HandoffSettings(spaces=parse_spaces("telegram:-1001"), signature="Acme"),
        tickets=HandoffRepository(sqlite_repository.db),
    )
    manager = make_manager(sqlite_repository, backend, desk=desk, company_facts=CompanyFacts())
    backend.enqueue("The customer asks about opening hours.")  # the case summary
    customer = {"platform": "telegram", "tenant": "777", "chat": "42", "user": "42"}
    answer = await ask(manager, "When are you open on Saturdays?", **customer)
    assert answer.startswith(say("knowledge.no_reliable_answer"))
    channels = {"telegram": FakeChannel("telegram")}
    await OutboxWorker(desk=desk, channels=channels).flush()
    [(space, _, ticket)] = channels["telegram"].tickets
    assert space.chat == "-1001"
    assert "When are you open on Saturdays?" in ticket
    # The model wrote the summary for the team, never an answer for the customer.
    assert len(backend.requests) == 1 and "opening hours" not in answer


def test_the_check_names_the_subject_and_costs_microseconds() -> None:
    assert company_fact_subject("What are your opening hours?") == "hours"
    assert company_fact_subject("How do I reset my password?") == "accounts"
    assert company_fact_subject("Write a poem about shipping") is None
    assert company_fact_subject("") is None
    started = time.perf_counter()
    for _ in range(200):
        for question in COMPANY + GENERAL:
            company_fact_subject(question)
    per_message = (time.perf_counter() - started) / (200 * len(COMPANY + GENERAL))
    assert per_message < 0.001, f"{per_message * 1e6:.0f} µs a message"


async def test_wordings_no_pattern_knows_are_caught_by_the_exemplars() -> None:
    exemplars = [
        ("company", "wen is teh shop opn on sundys"),
        ("company", "shop opn sundys"),
        ("company", "opn sundys shop"),
        ("general", "capital city of peru"),
        ("general", "tallest tree on earth"),
        ("general", "a poem about the sea"),
    ]
    facts = CompanyFacts(embedder=HashingEmbedder(), exemplars=exemplars, margin=0.1)
    question = "is teh shop opn on sundys"
    assert company_fact_subject(question) is None
    # Until the model is ready, the patterns decide alone.
    assert await facts.subject(question) is None
    facts.warm()
    assert await facts.subject(question) == "similar"
    assert await facts.subject("capital city of france") is None
    # A request to write is never the company's, however close its words.
    assert await facts.subject("write a poem: is teh shop opn on sundys") is None


def test_the_deployment_builds_the_check_from_its_settings(sqlite_repository: Repository) -> None:
    kb = knowledge_base(sqlite_repository)
    assert create_company_facts(Settings(company_facts="answer"), kb) is None
    facts = create_company_facts(Settings(), kb)
    # The margin is the shipped model's: another embedding model gets the patterns.
    assert facts is not None and facts.embedder is None


def test_the_shipped_exemplars_are_labelled() -> None:
    rows = CompanyFacts()._exemplars
    assert {label for label, _ in rows} == {"company", "general"}
    assert len(rows) > 100


def test_the_setting_is_refuse_or_answer() -> None:
    assert Settings.from_env({}).company_facts == "refuse"
    assert Settings.from_env({"DESKMATE_COMPANY_FACTS": "answer"}).company_facts == "answer"
    with pytest.raises(ConfigError, match="DESKMATE_COMPANY_FACTS must be refuse or answer"):
        Settings.from_env({"DESKMATE_COMPANY_FACTS": "maybe"})
