"""The human handoff inside one process: tickets, both directions of the
relay through the outbox, agent commands and the ticket clocks. Platform
channels are in-memory here; tests/e2e runs the real adapters."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from bot.handoff.config import BusinessHours, HandoffSettings, parse_spaces
from bot.handoff.desk import ALREADY_OPEN, NO_TEAM, HelpDesk
from bot.handoff.worker import OutboxWorker
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.policy import Policy
from bot.manager import ConversationManager
from bot.messages import CATALOG
from bot.types import ConversationRef, Inbound, Reply, ReplyKind, TicketThread, Undeliverable
from llm.base import LLMError
from llm.embeddings import HashingEmbedder
from llm.fake import FakeBackend
from storage.handoff_repo import HandoffRepository
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository
from tests.conftest import make_manager
from tests.support import Rendered, make_inbound


class FakeChannel:
    """A platform in memory: what was posted where, and ticket threads."""

    def __init__(self, name: str, *, forum: bool = True) -> None:
        self.name = name
        self.forum = forum
        self.posts: list[tuple[ConversationRef, str, str]] = []
        self.tickets: list[tuple[ConversationRef, str, str]] = []
        self.refuse: BaseException | None = None
        self._ids = itertools.count(100)

    async def post(
        self,
        ref: ConversationRef,
        text: str,
        *,
        reply_to: str = "",
        buttons: Sequence[tuple[str, str]] = (),
    ) -> str:
        if self.refuse is not None:
            raise self.refuse
        self.posts.append((ref, text, reply_to))
        return str(next(self._ids))

    async def open_ticket(
        self, space: ConversationRef, *, title: str, text: str, ticket_id: int
    ) -> TicketThread:
        self.tickets.append((space, title, text))
        message = str(next(self._ids))
        return TicketThread(thread=message if self.forum else "", message=message)

    def texts(self, chat: str) -> list[str]:
        return [text for ref, text, _ in self.posts if ref.chat == chat]


SPACE = {"platform": "slack", "tenant": "T1", "chat": "C1"}


def agent(thread: str, user: str = "U9") -> dict[str, str]:
    """Where an agent writes: the support channel, in a ticket's thread or not."""
    return {"thread": thread, "user": user, **SPACE}


@pytest.fixture
async def handoff(
    repository: Repository, backend: FakeBackend, tmp_path: Path
) -> AsyncIterator[tuple[ConversationManager, OutboxWorker, dict[str, FakeChannel]]]:
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
    desk = HelpDesk(
        settings=HandoffSettings(spaces=parse_spaces("slack:T1/C1"), signature="Acme support"),
        tickets=HandoffRepository(repository.db),
    )
    manager = make_manager(repository, backend, knowledge=kb, desk=desk)
    channels = {"test": FakeChannel("test"), "slack": FakeChannel("slack")}
    worker = OutboxWorker(desk=desk, channels=channels)
    yield manager, worker, channels


async def say(manager: ConversationManager, text: str, **kw: object) -> Reply:
    return await manager.handle(make_inbound(text, **kw), Rendered())  # type: ignore[arg-type]


async def test_without_a_team_human_is_told_plainly_and_kept(
    repository: Repository, backend: FakeBackend
) -> None:
    kb = KnowledgeBase(
        repository=KnowledgeRepository(repository.db), embedder=HashingEmbedder(), background=()
    )
    manager = make_manager(repository, backend, knowledge=kb)
    reply = await say(manager, "/human")
    assert reply.text == NO_TEAM
    assert [e.reason for e in await kb.repository.escalations()] == [
        "the customer asked for a person"
    ]
    assert (await say(manager, "can I talk to a real person?")).text == NO_TEAM
    assert backend.requests == []


async def test_a_ticket_relays_both_ways_and_the_model_stays_quiet(
    handoff: tuple[ConversationManager, OutboxWorker, dict[str, FakeChannel]],
    backend: FakeBackend,
) -> None:
    manager, worker, channels = handoff
    backend.enqueue("The customer wants a refund for order 42.")  # the case summary
    opened = await say(manager, "/human", user="alice")
    assert opened.text.startswith("I've asked a person from our support team")
    await worker.flush()
    [(space, title, ticket_text)] = channels["slack"].tickets
    assert (space.platform, space.tenant, space.chat) == ("slack", "T1", "C1")
    assert title.startswith("#1 name-alice (test)")
    assert "Summary: The customer wants a refund for order 42." in ticket_text
    assert "Why: the customer asked for a person" in ticket_text
    thread = "100"
    requests = len(backend.requests)

    follow_up = await say(manager, "it is order 42", user="alice")
    assert follow_up.kind is ReplyKind.SILENT and follow_up.text == ""
    await worker.flush()
    assert channels["slack"].posts[-1][0].thread == thread
    assert channels["slack"].posts[-1][1] == "name-alice: it is order 42"

    reply = make_inbound("Refunded, sorry for the trouble!", event_id="agent-1", **agent(thread))
    assert (await manager.handle(reply, Rendered())).kind is ReplyKind.SILENT
    again = await manager.handle(reply, Rendered())  # the platform delivers it twice
    assert again.kind is ReplyKind.DUPLICATE
    await worker.flush()
    assert channels["test"].texts("c1") == [
        "A person from the support team (Acme support) has joined the conversation.",
        "Acme support: Refunded, sorry for the trouble!",
    ]
    assert len(backend.requests) == requests  # the model heard nothing of it

    note = await say(manager, "/note customer is a VIP", **agent(thread))
    assert "does not see notes" in note.text
    resolved = await say(manager, "/resolve", **agent(thread))
    assert resolved.text.startswith("Resolved ticket #1")
    await worker.flush()
    assert channels["test"].texts("c1")[-1].startswith("The support team marked this")
    assert "VIP" not in " ".join(channels["test"].texts("c1"))

    answer = await say(manager, "What are your opening hours?", user="alice")
    assert answer.text.startswith("We are open 9-17.")


async def test_plain_requests_in_english_and_chinese_open_one_ticket(
    handoff: tuple[ConversationManager, OutboxWorker, dict[str, FakeChannel]],
    backend: FakeBackend,
) -> None:
    manager, worker, channels = handoff
    backend.enqueue(error=LLMError("no summary today"))
    first = await say(manager, "我要转人工")
    # The customer is answered in their language, and a command's reply
    # follows the conversation's language.
    assert first.text == CATALOG["zh"]["handoff.opened"]
    second = await say(manager, "/human")
    assert second.text == CATALOG["zh"]["handoff.already_open"] != ALREADY_OPEN
    await worker.flush()
    assert len(channels["slack"].tickets) == 1
    # No summary: the ticket shows the last messages instead, and the language.
    assert "customer: 我要转人工" in channels["slack"].tickets[0][2]
    assert "Language: 中文 (zh)" in channels["slack"].tickets[0][2]


async def test_a_knowledge_base_escalation_becomes_a_ticket_with_its_candidates(
    handoff: tuple[ConversationManager, OutboxWorker, dict[str, FakeChannel]],
    backend: FakeBackend,
) -> None:
    manager, worker, channels = handoff
    backend.enqueue("Asks about volcanoes.")
    reply = await say(manager, "Where is the nearest volcano to your opening?")
    assert "so I won't guess" in reply.text and "support team" in reply.text
    await worker.flush()
    ticket_text = channels["slack"].tickets[0][2]
    assert "Why: the knowledge base had no reliable answer" in ticket_text
    assert "Knowledge base considered:" in ticket_text
    assert "hours-1 (0." in ticket_text and "What are your opening hours?" in ticket_text


async def test_two_failed_answers_in_a_row_go_to_a_person(
    handoff: tuple[ConversationManager, OutboxWorker, dict[str, FakeChannel]],
    backend: FakeBackend,
) -> None:
    manager, worker, channels = handoff
    await say(manager, "/mode assistant", user="admin")
    backend.enqueue(error=LLMError("down"))
    assert (await say(manager, "tell me about volcanoes")).failed
    await worker.flush()
    assert channels["slack"].tickets == []
    backend.enqueue(error=LLMError("still down"))
    assert (await say(manager, "tell me about volcanoes")).failed
    await worker.flush()
    assert "Why: the model failed to answer twice in a row" in channels["slack"].tickets[0][2]
    assert channels["test"].texts("c1")[-1].startswith("I've asked a person")


async def test_agent_commands_and_takeover(
    handoff: tuple[ConversationManager, OutboxWorker, dict[str, FakeChannel]],
    backend: FakeBackend,
) -> None:
    manager, worker, channels = handoff
    await say(manager, "/mode assistant", chat="c7", user="admin")
    backend.enqueue("Hi!")
    assert (await say(manager, "hello", chat="c7", user="bob")).text == "Hi!"
    listed = await say(manager, "/tickets", **agent(""))
    assert listed.text.startswith("No open tickets.\nRecent conversations (/takeover N):\n1 ·")
    taken = await say(manager, "/takeover 1", **agent(""))
    assert "conversation 1 as ticket #1" in taken.text
    await worker.flush()
    assert "Taken over by name-U9" in channels["slack"].tickets[0][2]
    assert channels["test"].texts("c7")[-1].startswith("A person from the support team")
    assert "#1 human, with name-U9" in (await say(manager, "/tickets", **agent(""))).text
    thread = "100"
    assert "is with name-U9" in (await say(manager, "/claim", **agent(thread, user="U8"))).text
    released = await say(manager, "release", **agent(thread))
    assert "waiting again" in released.text
    assert "is yours" in (await say(manager, "claim", **agent(thread, user="U8"))).text
    outside = await say(manager, "/resolve", **agent(""))
    assert "works inside a ticket" in outside.text
    chatter = await say(manager, "coffee anyone?", **agent(""))
    assert chatter.kind is ReplyKind.SILENT
    helped = await say(manager, "/help", **agent(thread))
    assert "/takeover N" in helped.text
    itself = await say(manager, "/human", **agent(""))
    assert itself.text == "This is the support space: /human is for customers."


async def test_a_relay_the_platform_refuses_is_retried_then_reported(
    handoff: tuple[ConversationManager, OutboxWorker, dict[str, FakeChannel]],
    backend: FakeBackend,
) -> None:
    manager, worker, channels = handoff
    backend.enqueue(error=LLMError("no summary"))
    await say(manager, "/human")
    await worker.flush()
    channels["test"].refuse = RuntimeError("HTTP 500 from the platform")
    await say(manager, "please hold on", **agent("100"))
    await worker.flush()
    rows = await worker.tickets.outbox_rows(status="pending")
    assert [(r["kind"], r["attempts"]) for r in rows] == [("notice", 1), ("to_customer", 1)]
    channels["test"].refuse = None
    await worker.tickets.db.run(
        lambda conn: conn.exec_driver_sql("UPDATE outbox SET next_attempt_at = created_at")
    )
    await worker.flush()
    assert channels["test"].texts("c1")[-1] == "Acme support: please hold on"
    channels["test"].refuse = Undeliverable("the customer blocked the bot")
    await say(manager, "are you there?", **agent("100"))
    await worker.flush()
    await worker.flush()
    assert (
        channels["slack"]
        .texts("C1")[-1]
        .startswith(
            "Your message could not be delivered to the customer (the customer blocked the bot)"
        )
    )


async def test_reminders_idle_tickets_and_business_hours(
    repository: Repository, backend: FakeBackend
) -> None:
    closed_always = BusinessHours.parse("Mon 00:00-00:01 Pacific/Kiritimati")
    desk = HelpDesk(
        settings=HandoffSettings(
            spaces=parse_spaces("telegram:-100"),
            remind=timedelta(seconds=0),
            idle=timedelta(days=1),
            hours=closed_always,
        ),
        tickets=HandoffRepository(repository.db),
    )
    manager = make_manager(repository, backend, desk=desk)
    channels = {"test": FakeChannel("test"), "telegram": FakeChannel("telegram", forum=False)}
    worker = OutboxWorker(desk=desk, channels=channels)
    backend.enqueue(error=LLMError("no summary"))
    notice = await say(manager, "/human")
    assert "Our team is in Mon 00:00-00:01 Pacific/Kiritimati" in notice.text
    await worker.flush()
    await worker.tick_clocks()
    await worker.flush()
    ticket_message = "100"
    [(ref, text, reply_to)] = channels["telegram"].posts
    assert ref.chat == "-100" and reply_to == ticket_message and "has waited" in text
    # In a group without topics, agents answer by replying to the ticket message...
    reply = Inbound(
        ref=ConversationRef("telegram", "t1", "-100"),
        user="7",
        text="on it",
        event_id="tg-1",
        meta={"reply_to": ticket_message},
    )
    await manager.handle(reply, Rendered())
    await worker.flush()
    assert channels["test"].texts("c1")[-1] == "Support team: on it"
    # ... or to a message of the customer's relayed into the group.
    await say(manager, "thanks, it's order 42")
    await worker.flush()
    relayed = str(len(channels["telegram"].posts) + 100)  # the fake's id for that post
    assert channels["telegram"].posts[-1][1] == "name-u1: thanks, it's order 42"
    answer = Inbound(
        ref=ConversationRef("telegram", "t1", "-100"),
        user="7",
        text="found it",
        event_id="tg-2",
        meta={"reply_to": relayed},
    )
    await manager.handle(answer, Rendered())
    await worker.flush()
    assert channels["test"].texts("c1")[-1] == "Support team: found it"
    # ... and the ticket closes by itself once both sides went quiet.
    worker.desk.settings = HandoffSettings(spaces=desk.settings.spaces, idle=timedelta(seconds=0))
    await worker.tick_clocks()
    await worker.flush()
    assert "quiet for a while" in channels["test"].texts("c1")[-1]
    assert await desk.open_ticket_of(1) is None


async def test_forget_removes_the_customer_from_their_tickets(
    handoff: tuple[ConversationManager, OutboxWorker, dict[str, FakeChannel]],
    backend: FakeBackend,
) -> None:
    manager, worker, _ = handoff
    backend.enqueue("Alice wants her address changed to 1 Main St.")
    await say(manager, "/human", user="alice")
    await say(manager, "my address is 1 Main St", user="alice")
    await say(manager, "/forget", user="alice")
    tickets = worker.tickets
    [ticket] = await tickets.open_tickets()
    assert (ticket.customer, ticket.customer_name, ticket.summary) == ("", "", "")
    assert ticket.details == {}
    assert all(e.author != "test:alice" for e in await tickets.events(ticket.id))
    assert not any("Main St" in r["text"] for r in await tickets.outbox_rows())
