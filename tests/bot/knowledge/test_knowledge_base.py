"""Storage, retrieval and the answering policy on SQLite and PostgreSQL.

These use the model-free ``HashingEmbedder`` so they run in a second; the
real model's retrieval quality is measured in ``test_retrieval_quality``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.errors import StorageError
from bot.knowledge.importer import KnowledgeImportError
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.policy import Policy, check_grounded, grounded_prompt
from bot.manager import ConversationManager
from bot.plans import Chat, Escalate
from llm.embeddings import HashingEmbedder
from llm.fake import FakeBackend
from storage.knowledge_repo import EntryInput, KnowledgeRepository
from storage.models import escalations, faq_answers, faq_entries
from storage.repository import Repository
from tests.conftest import make_manager
from tests.support import Rendered, make_inbound

CSV = (
    "id,question,answer,source,alternatives\n"
    "ship-1,How long does shipping take?,Orders arrive in 2-3 working days.,Shipping policy,"
    "When will my order arrive?|Delivery time?\n"
    'ret-1,Can I return an item?,"Yes, within 30 days of delivery.",Returns policy,\n'
    "pay-1,Which payment methods do you accept?,Card and invoice.,Payments page,\n"
    "bad,,missing question,,\n"
)
POLICY = Policy(
    # HashingEmbedder scores: a stored phrasing ~0.53, half the words ~0.43, unrelated < 0.1.
    verbatim_score=0.5,
    verbatim_margin=0.05,
    grounded_score=0.25,
    fallback_verbatim_score=0.35,
)


@pytest.fixture
async def kb(repository: Repository) -> KnowledgeBase:
    return KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
        background=(),
        policy=POLICY,
        refresh_interval=0.0,
    )


async def _count(kb: KnowledgeBase, table: object = faq_entries) -> int:
    query = select(func.count()).select_from(table)  # type: ignore[arg-type]
    return int(await kb.repository.db.run(lambda conn: conn.execute(query).scalar_one()))


def _write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


async def test_import_reimport_updates_instead_of_duplicating(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    report = await kb.import_file(_write(tmp_path, "faq.csv", CSV))
    assert (report.created, report.updated, report.unchanged) == (3, 0, 0)
    assert [str(i) for i in report.skipped] == ["line 5: the question is empty"]
    again = await kb.import_file(_write(tmp_path, "faq.csv", CSV.replace("2-3", "1-2")))
    assert (again.created, again.updated, again.unchanged) == (0, 1, 2)
    assert await _count(kb) == 3
    hits = await kb.search("How long does shipping take?")
    assert hits[0].id == "ship-1"
    assert "1-2 working days" in hits[0].text

    # Without an id column the question is the key.
    plain = "question,answer\nHow long does shipping take?,Fast.\nNew one?,Yes.\n"
    report = await kb.import_file(_write(tmp_path, "plain.csv", plain))
    assert (report.created, report.updated) == (2, 0)
    report = await kb.import_file(_write(tmp_path, "plain.csv", plain.replace("Fast", "Quick")))
    assert (report.created, report.updated, report.unchanged) == (0, 1, 1)
    assert await _count(kb) == 5


async def test_failed_import_stores_nothing(kb: KnowledgeBase, tmp_path: Path) -> None:
    await kb.import_file(_write(tmp_path, "faq.csv", CSV))
    good = EntryInput(question="Brand new?", answer="Yes.", external_id="new-1")
    broken = EntryInput(question="Broken?", answer=None, external_id="broken")  # type: ignore[arg-type]
    with pytest.raises(StorageError):
        await kb.repository.upsert_many("", [(good, b""), (broken, b"")], embedding_model="m")
    assert await _count(kb) == 3
    with pytest.raises(KnowledgeImportError):
        await kb.import_file(_write(tmp_path, "broken.json", '[{"question": "x"'))
    assert await _count(kb) == 3


async def test_tenant_entries_are_private(kb: KnowledgeBase, tmp_path: Path) -> None:
    await kb.import_file(_write(tmp_path, "faq.csv", CSV))
    await kb.add(
        EntryInput(
            question="What is the Acme VIP hotline?", answer="Call 555-0100.", source="Acme"
        ),
        tenant="acme",
    )
    acme = await kb.search("Acme VIP hotline number", tenant="acme")
    assert acme[0].tenant == "acme"
    other = await kb.search("Acme VIP hotline number", tenant="globex")
    assert all(h.tenant == "" for h in other)
    assert (await kb.search("shipping", tenant="acme"))[0].tenant == ""
    # keyword search in the database honours the same scoping
    assert await kb.repository.keyword_search("hotline", tenant="globex") == []
    assert len(await kb.repository.keyword_search("hotline", tenant="acme")) == 1


async def test_keyword_search_ranks_question_words(kb: KnowledgeBase, tmp_path: Path) -> None:
    await kb.import_file(_write(tmp_path, "faq.csv", CSV))
    found = await kb.repository.keyword_search("what payment methods are there?", tenant="")
    ids = [entry_id for entry_id, _ in found]
    entries = {e.id: e for e in await kb.repository.entries()}
    assert entries[ids[0]].external_id == "pay-1"
    assert all(score > 0 for _, score in found)


async def test_remove_and_index_refresh(kb: KnowledgeBase, tmp_path: Path) -> None:
    await kb.import_file(_write(tmp_path, "faq.csv", CSV))
    assert (await kb.search("Can I return an item?"))[0].id == "ret-1"
    removed = await kb.remove("ret-1")
    assert removed is not None and removed.question == "Can I return an item?"
    assert await kb.remove("ret-1") is None
    assert all(h.id != "ret-1" for h in await kb.search("Can I return an item?"))
    assert await kb.repository.keyword_search("return", tenant="") == []


async def ask(manager: ConversationManager, text: str, chat: str) -> str:
    seen = Rendered()
    reply = await manager.handle(make_inbound(text, platform="web", chat=chat), seen)
    assert seen.replies == [reply.text]
    return reply.text


async def test_policy_paths_and_logging(
    kb: KnowledgeBase, repository: Repository, tmp_path: Path
) -> None:
    # The grounded path, as deployments that turn "did you mean" off get it.
    kb.policy = dataclasses.replace(kb.policy, clarify=False)
    await kb.import_file(_write(tmp_path, "faq.csv", CSV))
    backend = FakeBackend()
    manager = make_manager(repository, backend, knowledge=kb)

    verbatim = await ask(manager, "When will my order arrive?", "c1")
    assert verbatim.startswith("Orders arrive in 2-3 working days.")
    assert "Shipping policy" in verbatim and "ship-1" in verbatim
    logged = await kb.repository.answers(conversation_key="web:t1:c1:", limit=1)
    assert logged[0]["path"] == "verbatim" and logged[0]["entries"][0]["ref"] == "ship-1"

    escalated = await ask(manager, "What is the capital of Australia?", "c2")
    assert "human colleague" in escalated
    open_ = await kb.repository.escalations()
    assert [(e.question, e.user_id) for e in open_] == [
        ("What is the capital of Australia?", "web:u1")
    ]

    backend.enqueue("Items can be returned within 30 days of delivery [1].")
    grounded = await ask(manager, "return an item I bought last week", "c3")
    assert (await kb.repository.answers(limit=1))[0]["path"] == "grounded"
    assert "within 30 days of delivery [1]" in grounded and "Sources:" in grounded

    # An answer that cites nothing is never shown as the FAQ's.
    backend.enqueue("Sure, we refund everything within 90 days, no questions asked.")
    guarded = await ask(manager, "return an item I bought last week", "c4")
    guarded_path = (await kb.repository.answers(limit=1))[0]["path"]
    assert guarded_path in ("verbatim", "escalated")
    assert "90 days" not in guarded

    rows = await kb.repository.answers()
    assert [r["path"] for r in reversed(rows)][:3] == ["verbatim", "escalated", "grounded"]
    assert rows[-1]["entries"][0]["ref"] == "ship-1"
    assert await _count(kb, faq_answers) == 4
    assert await _count(kb, escalations) == (2 if guarded_path == "escalated" else 1)


async def test_faq_mode_never_calls_the_model(
    kb: KnowledgeBase, repository: Repository, tmp_path: Path
) -> None:
    await kb.import_file(_write(tmp_path, "faq.csv", CSV))
    backend = FakeBackend()
    manager = make_manager(repository, backend, knowledge=kb)
    await kb.set_mode("conversation:web:t1:c1:", "faq")
    backend.enqueue("Invented answer [1].")
    answer = await ask(manager, "return an item I bought last week", "c1")
    assert (await kb.repository.answers(limit=1))[0]["path"] == "clarify"
    assert "1. Can I return an item?" in answer  # offered as the closest entry
    assert "Invented" not in answer and backend.requests == []
    plan = await kb.plan("capital of Australia?", tenant="t1", conversation_key="web:t1:c2:")
    assert isinstance(plan, Escalate)
    await kb.set_mode("tenant:t1", "assistant")
    plan = await kb.plan("capital of Australia?", tenant="t1", conversation_key="web:t1:c2:")
    assert isinstance(plan, Chat)


def test_guard_rejects_uncited_unrelated_and_foreign_citations() -> None:
    from bot.knowledge.faq_source import entry_passage
    from storage.knowledge_repo import FaqEntry

    entry = FaqEntry(
        1,
        "",
        "id:r",
        "r",
        "Can I return an item?",
        "Yes, within 30 days of delivery.",
        (),
        (),
        "Returns",
        None,  # type: ignore[arg-type]
    )
    hits = [entry_passage(entry, 0.7, 0.7, 0.0)]
    assert check_grounded("Yes, within 30 days of delivery [1].", "returns?", hits) == ""
    assert check_grounded("Yes, within 30 days.", "returns?", hits) == "no citation"
    assert "not given" in check_grounded("Within 30 days [2].", "returns?", hits)
    assert "no answer" in check_grounded("NO_ANSWER", "returns?", hits)
    assert "content words" in check_grounded(
        "Our premium membership includes free lifetime warranty and helicopter delivery [1].",
        "returns?",
        hits,
    )
    messages = grounded_prompt("returns?", hits, "You are Acme's assistant.")
    assert messages[0].content.startswith("You are Acme's assistant.")
    assert "[1] Q: Can I return an item?" in messages[1].content


async def test_another_process_sees_changes(kb: KnowledgeBase, tmp_path: Path) -> None:
    other = KnowledgeBase(
        repository=KnowledgeRepository(kb.repository.db),
        embedder=HashingEmbedder(),
        background=(),
        policy=POLICY,
        refresh_interval=0.0,
    )
    await kb.import_file(_write(tmp_path, "faq.csv", CSV))
    assert (await other.search("Which payment methods do you accept?"))[0].text == (
        "Card and invoice."
    )
    # An edit that carries an old updated_at (from the file) is still noticed.
    edited = CSV.replace(
        "id,question,answer,source,alternatives",
        "id,question,answer,source,alternatives,updated_at",
    ).replace("\n", ",2020-01-01\n")
    edited = edited.replace("Card and invoice.", "Card only.")
    edited = edited.replace(
        "id,question,answer,source,alternatives,updated_at,2020-01-01",
        "id,question,answer,source,alternatives,updated_at",
    )
    report = await kb.import_file(_write(tmp_path, "edited.csv", edited))
    assert report.updated >= 1
    hit = (await other.retriever.search("Which payment methods do you accept?"))[0].entry
    assert hit.answer == "Card only."
    assert hit.updated_at.year == 2020


async def test_thresholds_come_from_settings(tmp_path: Path) -> None:
    from bot.app import create_knowledge_base as knowledge_base
    from bot.errors import ConfigError
    from bot.settings import Settings
    from storage.db import Database

    settings = Settings.from_env(
        {"DESKMATE_FAQ_VERBATIM_SCORE": "0.7", "DESKMATE_FAQ_GROUNDED_SCORE": "0.5"}
    )
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    kb = knowledge_base(db, settings)
    await db.dispose()
    assert (kb.policy.verbatim_score, kb.policy.grounded_score) == (0.7, 0.5)
    assert kb.policy.fallback_verbatim_score == pytest.approx(0.6)
    with pytest.raises(ConfigError, match="GROUNDED_SCORE"):
        Settings.from_env({"DESKMATE_FAQ_GROUNDED_SCORE": "0.9"})


async def test_the_scope_score_penalises_words_the_faq_never_uses(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    from bot.knowledge.retrieval import COVERAGE_WEIGHT

    await kb.import_file(_write(tmp_path, "faq.csv", CSV))
    index = await kb.retriever.refresh()
    assert index.coverage("how long does shipping take", "") == 1.0
    assert index.coverage("how long does shipping to mars take", "") == pytest.approx(3 / 4)
    assert index.coverage("???", "") == 1.0  # no content words: no evidence either way
    found = await kb.lookup("how long does shipping to mars take", limit=3)
    best = max(h.dense for h in await kb.search("how long does shipping to mars take", limit=10))
    assert found.scope == pytest.approx(best - COVERAGE_WEIGHT / 4)


async def test_a_question_out_of_scope_is_escalated_however_close_its_best_entry(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    await kb.import_file(_write(tmp_path, "faq.csv", CSV))
    hits = await kb.search("How long does shipping take?", limit=3)
    assert kb.decide_hits(hits).path == "verbatim"
    # The same hits, judged off-topic by the scope score, are not quoted.
    decision = kb.decide_hits(hits, scope=POLICY.grounded_score - 0.01)
    assert (decision.path, decision.reason) == ("escalated", "no entry is close enough")


async def test_with_an_adapted_model_the_scope_is_judged_by_the_base_model(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    from bot.knowledge.index import Hit, VectorIndex, embed_entries

    await kb.import_file(_write(tmp_path, "faq.csv", CSV))
    retriever = kb.retriever
    entries = await kb.repository.entries()
    hits = [Hit(e, 0.0, 0.0, 0.0) for e in entries]
    question = "when will my parcel arrive"
    base = retriever.base_embedder
    index = VectorIndex(entries, embed_entries(base, entries), base.dim)
    asked = base.embed([question])[0]
    expected = float(index.dense_scores(asked, "").max())
    assert retriever._base_confidence(asked, hits, "", {}) == pytest.approx(expected)
    # A learned wording is one more phrasing of its entry, for its tenant only.
    learned = {entries[0].id: [("t1", question)]}
    both = base.embed([f"{entries[0].question} {entries[0].answer}"])[0]
    as_learned = (1.0 + float(both @ asked)) / 2  # its phrasing matches exactly
    assert as_learned > expected
    assert retriever._base_confidence(asked, hits, "t1", learned) == pytest.approx(as_learned)
    assert retriever._base_confidence(asked, hits, "t2", learned) == pytest.approx(expected)


async def test_a_question_like_everyday_background_traffic_is_out_of_scope(
    repository: Repository, tmp_path: Path
) -> None:
    from bot.knowledge.retrieval import BACKGROUND_WEIGHT, COVERAGE_WEIGHT, load_background

    weather = "what is the weather like tomorrow"
    kb = KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
        policy=POLICY,
        refresh_interval=0.0,
        # The second is one of this FAQ's own questions: within its domain, so not used.
        background=[weather, "Can I return an item?"],
    )
    await kb.import_file(_write(tmp_path, "faq.csv", CSV))
    await kb.retriever.refresh()
    assert len(kb.retriever._background) == 1
    found = await kb.lookup(weather, limit=3)
    best = max(h.dense for h in await kb.search(weather, limit=10))
    coverage = (await kb.retriever.refresh()).coverage(weather, "")
    expected = best - COVERAGE_WEIGHT * (1 - coverage) - BACKGROUND_WEIGHT * 1.0
    assert found.scope == pytest.approx(expected, abs=1e-5)
    assert kb.decide_hits(found.passages, found.scope).path == "escalated"
    # The FAQ's own question is still in scope: the background list left it alone.
    returns = await kb.lookup("Can I return an item?", limit=3)
    assert kb.decide_hits(returns.passages, returns.scope).path == "verbatim"
    # The shipped list: plain questions, comments dropped.
    shipped = load_background()
    assert len(shipped) > 200 and not any(q.startswith("#") for q in shipped)
