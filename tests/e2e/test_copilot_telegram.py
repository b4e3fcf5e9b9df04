"""Suggested replies through the real Telegram adapter (python-telegram-bot,
long polling) against the fake Bot API: a customer in a private chat hands
off to a support group with topics; the ticket's topic gets a suggestion
with its sources and an inline keyboard Send / Edit / Discard. Send relays
once (also when Telegram delivers the press again and after a restart), Edit
is a reply to the suggestion with the new text, Discard relays nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adapters.telegram.adapter import TelegramAdapter
from bot.handoff.config import HandoffSettings, parse_spaces
from bot.handoff.desk import HelpDesk
from bot.handoff.worker import OutboxWorker
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.policy import Policy
from bot.manager import ConversationManager
from llm.embeddings import HashingEmbedder
from llm.fake import FakeBackend
from storage.handoff_repo import HandoffRepository
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository
from storage.team_repo import TeamRepository
from tests.conftest import make_manager
from tests.e2e.test_telegram_adapter import make_adapter
from tests.fakes.telegram_api import FakeTelegram, SentMessage

CUSTOMER = 4711
FORUM = -1001500
AGENT = {"user_id": 555, "first_name": "Sam"}
OPEN = "Acme support: We are open 9-17."


@dataclass
class Running:
    manager: ConversationManager
    adapter: TelegramAdapter
    worker: OutboxWorker


async def _start(repository: Repository, backend: FakeBackend, fake: FakeTelegram) -> Running:
    kb = KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
        background=(),
        policy=Policy(verbatim_score=0.5, grounded_score=0.25, fallback_verbatim_score=0.35),
        refresh_interval=0.0,
    )
    desk = HelpDesk(
        settings=HandoffSettings(
            spaces=parse_spaces(f"telegram:{FORUM}"), signature="Acme support"
        ),
        tickets=HandoffRepository(repository.db),
    )
    manager = make_manager(repository, backend, knowledge=kb, desk=desk)
    adapter = make_adapter(fake)
    await adapter.start(manager)
    worker = OutboxWorker(desk=desk, channels={"telegram": adapter}, interval=0.05)
    worker.start()
    return Running(manager, adapter, worker)


async def _stop(running: Running) -> None:
    await running.worker.stop()
    await running.adapter.stop()
    await running.manager.aclose()


async def test_suggestions_in_a_telegram_topic(
    sqlite_repository: Repository, backend: FakeBackend, fake: FakeTelegram, tmp_path: Path
) -> None:
    repository = sqlite_repository
    fake.make_forum(FORUM)
    path = tmp_path / "faq.csv"
    path.write_text(
        "id,question,answer\nhours-1,What are your opening hours?,We are open 9-17.\n",
        encoding="utf-8",
    )
    running = await _start(repository, backend, fake)
    assert running.manager.knowledge is not None
    await running.manager.knowledge.import_file(path)

    def suggestions() -> list[SentMessage]:
        return [m for m in fake.messages[FORUM] if "Suggested reply #" in m.text and m.buttons()]

    def customer_sees() -> list[str]:
        return fake.texts(CUSTOMER)

    backend.enqueue("Wants a person.")
    fake.send_user_message(CUSTOMER, "/human")
    await fake.wait_for(lambda: bool(fake.topics.get(FORUM)), what="the ticket's topic")
    [topic] = fake.topics[FORUM]

    # Send: the press is delivered twice; the customer gets the reply once.
    fake.send_user_message(CUSTOMER, "What are your opening hours?")
    await fake.wait_for(lambda: len(suggestions()) == 1, what="the suggestion")
    [first] = suggestions()
    assert first.thread_id == topic
    assert "Sources: FAQ hours-1" in first.text
    assert [label for label, _ in first.buttons()] == ["Send", "Edit", "Discard"]
    assert OPEN not in customer_sees()
    press = fake.press(first, "Send", **AGENT)
    fake.push(press)
    fake.repush(press)
    await fake.wait_for(lambda: OPEN in customer_sees(), what="the sent suggestion")

    # Edit: the button says how; a reply to the suggestion is the edited text.
    fake.send_user_message(CUSTOMER, "What are your opening hours?")
    await fake.wait_for(lambda: len(suggestions()) == 2, what="the second suggestion")
    second = suggestions()[1]
    fake.push(fake.press(second, "Edit", **AGENT))
    await fake.wait_for(
        lambda: any("Reply to suggestion #2" in t for t in fake.texts(FORUM, topic)),
        what="how to edit",
    )
    edited = "We are open 9-17, on Thursdays until 20."
    fake.send_user_message(
        FORUM, edited, thread_id=topic, reply_to=fake.message_json(second), **AGENT
    )
    await fake.wait_for(lambda: f"Acme support: {edited}" in customer_sees(), what="the edit")

    # Discard: nothing for the customer.
    fake.send_user_message(CUSTOMER, "What are your opening hours?")
    await fake.wait_for(lambda: len(suggestions()) == 3, what="the third suggestion")
    seen = len(customer_sees())
    fake.push(fake.press(suggestions()[2], "Discard", **AGENT))
    await fake.wait_for(
        lambda: any("Discarded suggestion #3" in t for t in fake.texts(FORUM, topic)),
        what="the discard",
    )
    assert len(customer_sees()) == seen

    # After a restart, Send on the first suggestion relays nothing more.
    await _stop(running)
    running = await _start(repository, backend, fake)
    fake.push(fake.press(first, "Send", **AGENT))
    await fake.wait_for(
        lambda: any("was sent already" in t for t in fake.texts(FORUM, topic)),
        what="the second send refused",
    )
    await _stop(running)
    assert customer_sees().count(OPEN) == 1
    assert customer_sees().count(f"Acme support: {edited}") == 1
    tickets = HandoffRepository(repository.db)
    assert [s.state for s in await tickets.suggestions.of_ticket(1)] == [
        "sent",
        "edited",
        "discarded",
    ]
    audit = {e.action for e in await TeamRepository(repository.db).audit_entries()}
    assert {"suggestion.sent", "suggestion.edited", "suggestion.discard"} <= audit
