"""/forget takes a person's words out of every table: their messages, the
questions /learn copied from them (pending or approved into an entry), and
group tickets that were someone else's. The help desk with in-memory
channels, through the manager, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.handoff.config import HandoffSettings, parse_spaces
from bot.handoff.desk import HelpDesk
from bot.handoff.worker import OutboxWorker
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.policy import Policy
from bot.manager import ConversationManager
from llm.embeddings import HashingEmbedder
from llm.fake import FakeBackend
from storage.faq_vectors import text_key
from storage.handoff_repo import HandoffRepository
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository
from storage.team_repo import TeamRepository
from tests.bot.handoff.test_handoff import FakeChannel, agent
from tests.conftest import make_manager
from tests.storage.words import where_written
from tests.support import Rendered, make_inbound

MARK = "OKAPI-5512"
OWNER = {"user": "admin", "chat": "staff"}
GROUP = {"chat": "grp"}


Desk = tuple[ConversationManager, OutboxWorker, KnowledgeBase]


@pytest.fixture
async def desk(repository: Repository, backend: FakeBackend, tmp_path: Path) -> AsyncIterator[Desk]:
    kb = KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
        # The multilingual model beside it keeps its vectors by text digest.
        crosslingual=HashingEmbedder(dim=256),
        background=(),
        policy=Policy(verbatim_score=0.5, grounded_score=0.25, fallback_verbatim_score=0.35),
        refresh_interval=0.0,
    )
    path = tmp_path / "faq.csv"
    path.write_text(
        "id,question,answer\nhours-1,What are your opening hours?,We are open 9-17.\n",
        encoding="utf-8",
    )
    await kb.import_file(path)
    help_desk = HelpDesk(
        settings=HandoffSettings(spaces=parse_spaces("slack:T1/C1"), signature="Acme support"),
        tickets=HandoffRepository(repository.db),
    )
    manager = make_manager(repository, backend, knowledge=kb, desk=help_desk)
    channels = {"test": FakeChannel("test"), "slack": FakeChannel("slack")}
    yield manager, OutboxWorker(desk=help_desk, channels=channels), kb


async def say(manager: ConversationManager, text: str, **kw: str) -> str:
    reply = await manager.handle(make_inbound(text, **kw), Rendered())
    return reply.text


async def test_forget_leaves_no_word_of_the_person_in_any_table(
    desk: Desk, backend: FakeBackend, repository: Repository
) -> None:
    manager, worker, kb = desk
    # Alice asks in a group; Bob, the other member, asks for a person: the
    # ticket is Bob's, and it shows Alice's question among the last turns.
    await say(manager, f"What are your opening hours {MARK}?", user="alice", **GROUP)
    backend.enqueue(f"Alice asked about opening hours ({MARK}); Bob wants a person.")
    await say(manager, "/human", user="bob", **GROUP)
    await worker.flush()
    tickets = HandoffRepository(repository.db)
    [ticket] = await tickets.open_tickets()
    assert ticket.customer == "test:bob"
    assert any(MARK in turn["text"] for turn in ticket.details["turns"])
    # Alice's next messages are relayed to Bob's ticket; an agent answers and
    # learns from it: once as a wording of the hours entry (approved), once
    # as a new entry (pending).
    thread = "100"
    await say(manager, f"Are you open on Sunday {MARK}?", user="alice", **GROUP)
    await say(manager, "Closed on Sundays.", **agent(thread))
    assert "another phrasing" in await say(manager, "/learn hours-1", **agent(thread))
    assert "hours-1 now also answers" in await say(manager, "/faq approve 1", **OWNER)
    await say(manager, f"And on holidays {MARK}?", user="alice", **GROUP)
    await say(manager, "Closed on holidays too.", **agent(thread))
    assert "a new FAQ entry" in await say(manager, "/learn", **agent(thread))
    await worker.flush()
    # And a direct chat of her own.
    await say(manager, f"my card ends {MARK}", user="alice", chat="dm-alice")
    assert await where_written(repository.db, MARK)
    assert kb.crosslingual is not None
    await kb.crosslingual.refresh(force=True)
    other = kb.crosslingual.embedder.name
    learned = [text_key(other, f"Are you open on Sunday {MARK}?")]
    assert await kb.repository.text_vectors(other, learned)

    await say(manager, "/forget", user="alice", chat="dm-alice")
    assert await where_written(repository.db, MARK) == []
    # Bob's ticket and the hours entry stay, without her words.
    kept = await tickets.get(ticket.id)
    # Her question was the only turn before Bob's /human: it goes with its answer.
    assert kept is not None and kept.customer == "test:bob" and kept.details["turns"] == []
    [entry] = [e for e in await kb.repository.entries(tenant="") if e.ref == "hours-1"]
    assert entry.alternatives == ()
    # Nor a vector of it, before any index is rebuilt.
    assert await kb.repository.text_vectors(other, learned) == {}
    [audit] = [
        e for e in await TeamRepository(repository.db).audit_entries() if e.action == "forget"
    ]
    assert (audit.actor, audit.target) == ("test:alice", "test:alice")
