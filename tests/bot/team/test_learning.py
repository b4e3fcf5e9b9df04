"""Agents' answers become knowledge, and tickets are rated: the help desk with
in-memory channels, through the manager, on SQLite and PostgreSQL."""

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
from bot.team.service import RATING_BUTTONS, TICKET_INVITATION
from llm.embeddings import HashingEmbedder
from llm.fake import FakeBackend
from storage.handoff_repo import HandoffRepository
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository
from tests.bot.handoff.test_handoff import FakeChannel, agent
from tests.conftest import make_manager
from tests.support import Rendered, make_inbound

Desk = tuple[ConversationManager, OutboxWorker, dict[str, FakeChannel], KnowledgeBase]
OWNER = {"user": "admin", "chat": "staff"}


@pytest.fixture
async def desk(repository: Repository, backend: FakeBackend, tmp_path: Path) -> AsyncIterator[Desk]:
    kb = KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
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
    yield manager, OutboxWorker(desk=help_desk, channels=channels), channels, kb


async def say(manager: ConversationManager, text: str, **kw: str) -> str:
    reply = await manager.handle(make_inbound(text, **kw), Rendered())
    return reply.text


async def test_an_answer_learned_in_a_ticket_and_approved_is_quoted_verbatim(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, worker, _, _ = desk
    backend.enqueue("Asks about gift cards.")  # the case summary
    escalated = await say(manager, "Can I pay with a gift card?")
    assert "support team" in escalated
    await worker.flush()
    thread = "100"
    assert "Nothing to learn" in await say(manager, "/learn", **agent(thread))
    await say(manager, "Yes: gift cards are accepted at checkout.", **agent(thread))
    # In Slack the plain word works in the ticket's thread, like "claim".
    proposed = await say(manager, "learn", **agent(thread))
    assert proposed.startswith("Proposed a new FAQ entry (#1)")
    assert "Q: Can I pay with a gift card?" in proposed
    pending = await say(manager, "/faq pending", **OWNER)
    assert "#1 [t1] Q: Can I pay with a gift card?" in pending
    assert "A: Yes: gift cards are accepted at checkout." in pending
    # A customer is no approver; an admin of another tenant cannot see it.
    assert "only for this bot's admins" in await say(manager, "/faq approve 1", chat="c5")
    await say(manager, "/role boss2 admin", user="admin", tenant="t2", chat="x")
    assert "no learned answer #1" in await say(
        manager, "/faq approve 1", user="boss2", tenant="t2", chat="x"
    )
    approved = await say(manager, "/faq approve 1", **OWNER)
    assert approved.startswith("Approved: FAQ entry")
    assert "already approved" in await say(manager, "/faq approve 1", **OWNER)
    # Searchable at once: a reworded question gets the agent's words verbatim.
    answer = await say(manager, "can I pay using a gift card", user="carol", chat="c2")
    assert answer.startswith("Yes: gift cards are accepted at checkout.")
    audit = await say(manager, "/audit", **OWNER)
    for action in ("faq.approve proposal 1", "faq.learn proposal 1", "ticket.claim ticket #1"):
        assert action in audit
    assert "No learned answers are waiting" in await say(manager, "/faq pending", **OWNER)


async def test_learn_faq_id_adds_a_phrasing_and_approve_can_edit_the_answer(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, worker, _, kb = desk
    backend.enqueue("Wants to know when we open.")
    await say(manager, "/human")
    await say(manager, "When does the shop unlock its doors?")
    await worker.flush()
    thread = "100"
    await say(manager, "From 9 in the morning.", **agent(thread))
    assert "no FAQ entry nope" in await say(manager, "/learn nope", **agent(thread))
    proposed = await say(manager, "/learn hours-1", **agent(thread))
    assert "another phrasing of FAQ entry hours-1 (#1)" in proposed
    # A tenant admin may not change the shared entry; an owner may.
    await say(manager, "/role boss admin", **OWNER)
    assert "no learned answer #1" in await say(manager, "/faq approve 1", user="boss", chat="staff")
    edited = await say(manager, "/faq approve 1 | We are open 9-17, Monday to Friday.", **OWNER)
    assert "hours-1 now also answers" in edited
    [entry] = await kb.repository.entries(tenant="")
    assert entry.alternatives == ("When does the shop unlock its doors?",)
    assert entry.answer == "We are open 9-17, Monday to Friday."
    # Rejecting is one step too.
    await say(manager, "/learn", **agent(thread))
    assert (
        await say(manager, "/faq reject 2", user="boss", chat="staff")
        == "Rejected learned answer #2."
    )


async def test_a_resolved_ticket_invites_a_rating_stored_against_the_ticket(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, worker, channels, _ = desk
    backend.enqueue("Needs a refund.")
    await say(manager, "/human", user="alice")
    await say(manager, "I want my money back for order 7", user="alice")
    await worker.flush()
    thread = "100"
    await say(manager, "Refunded.", **agent(thread))
    await say(manager, "/resolve", **agent(thread))
    [row] = [r for r in await worker.tickets.outbox_rows() if r["key"] == "resolved:1"]
    assert row["text"].endswith(TICKET_INVITATION)
    assert [tuple(b) for b in row["buttons"]] == list(RATING_BUTTONS)
    await worker.flush()
    assert channels["test"].texts("c1")[-1].endswith(TICKET_INVITATION)
    assert await say(manager, "👍", user="alice") == "Thanks for the feedback!"
    [rating] = await manager.team.repository.ratings()
    assert rating.ticket_id == 1 and rating.score == 1 and rating.inbound_id is None
    assert rating.question == "I want my money back for order 7"
    audit = await say(manager, "/audit", **OWNER)
    assert "ticket.resolve ticket #1" in audit


async def test_the_gap_report_groups_escalated_and_badly_rated_questions(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, _, _, _ = desk
    for i, question in enumerate(
        [
            "Do you deliver to Norway?",
            "do you deliver to norway please",
            "Where is the nearest volcano?",
        ]
    ):
        backend.enqueue("summary")
        await say(manager, question, user=f"u{i}", chat=f"c{i}")
    team = manager.team.repository
    rated = await team.invite_rating(
        tenant="t1",
        conversation_id=1,
        user_id="test:u9",
        question="do you deliver to Norway at all",
    )
    await team.rate(rated, -1, "no answer")
    report = await say(manager, "/faq gaps", **OWNER)
    lines = report.splitlines()
    assert lines[0] == "Knowledge gaps (4 questions in 2 groups):"
    assert lines[1].startswith("3× “") and "norway" in lines[1].lower()
    assert "(2 escalated, 1 rated bad)" in lines[1]
    assert lines[4].startswith("1× “Where is the nearest volcano?”")
    refused = await say(manager, "/faq gaps all", user="x", chat="zz")
    assert "only for this bot's admins" in refused


async def test_takeover_is_audited(desk: Desk, backend: FakeBackend) -> None:
    manager, worker, _, _ = desk
    await say(manager, "/mode assistant", user="admin", chat="c7")
    backend.enqueue("Hi!")
    await say(manager, "hello", chat="c7", user="bob")
    assert "as ticket #1" in await say(manager, "/takeover 1", **agent(""))
    await worker.flush()
    await say(manager, "release", **agent("100"))
    audit = await say(manager, "/audit", **OWNER)
    assert "slack:U9 takeover conversation 1 (ticket=1)" in audit
    assert "slack:U9 ticket.release ticket #1" in audit
