"""Suggested replies through the real Slack adapter (Bolt over HTTP) against
the local fake Slack: a customer in a DM hands off to the support channel,
the ticket's thread gets a suggestion with its sources and the Send, Edit
and Discard buttons; Send relays once (also when the click arrives twice and
after a restart), Edit opens a modal whose submission relays the edited
text, Discard relays nothing, and each outcome is recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from adapters.slack.adapter import SlackAdapter
from adapters.slack.convert import unescape
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
from tests.e2e.test_slack_events import SECRET, _serve
from tests.fakes.slack_api import FakeSlack, Message, deliver, message_event

OPEN = "Acme support: We are open 9-17."


@dataclass
class Running:
    manager: ConversationManager
    adapter: SlackAdapter
    worker: OutboxWorker
    url: str
    stop_serving: object


async def _start(repository: Repository, backend: FakeBackend, fake: FakeSlack) -> Running:
    kb = KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
        background=(),
        policy=Policy(verbatim_score=0.5, grounded_score=0.25, fallback_verbatim_score=0.35),
        refresh_interval=0.0,
    )
    desk = HelpDesk(
        settings=HandoffSettings(spaces=parse_spaces("slack:T1/C1"), signature="Acme support"),
        tickets=HandoffRepository(repository.db),
    )
    manager = make_manager(repository, backend, knowledge=kb, desk=desk)
    adapter = SlackAdapter(
        bot_token="xoxb-test", signing_secret=SECRET, api_url=fake.api_url, edit_interval=0.05
    )
    runner, url = await _serve(adapter)
    await adapter.start(manager)
    worker = OutboxWorker(desk=desk, channels={"slack": adapter}, interval=0.05)
    worker.start()
    return Running(manager, adapter, worker, url, runner)


async def _stop(running: Running) -> None:
    await running.worker.stop()
    await running.adapter.stop()
    await running.manager.aclose()
    await running.stop_serving.cleanup()  # type: ignore[attr-defined]


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    server = await FakeSlack().start()
    yield server
    await server.stop()


async def test_suggestions_in_a_slack_ticket(
    sqlite_repository: Repository, backend: FakeBackend, fake: FakeSlack, tmp_path: Path
) -> None:
    repository = sqlite_repository
    path = tmp_path / "faq.csv"
    path.write_text(
        "id,question,answer\nhours-1,What are your opening hours?,We are open 9-17.\n",
        encoding="utf-8",
    )
    running = await _start(repository, backend, fake)
    assert running.manager.knowledge is not None
    await running.manager.knowledge.import_file(path)

    def customer_sees() -> list[str]:
        return [unescape(m.text) for m in fake.bot_messages("D1")]

    def suggestions(ticket: Message) -> list[Message]:
        return [
            m
            for m in fake.bot_messages("C1", ticket.ts)
            if "Suggested reply #" in m.text and fake.buttons(m)
        ]

    async with aiohttp.ClientSession() as session:

        async def post(payload: dict[str, object]) -> None:
            assert await deliver(session, running.url, SECRET, payload) == 200

        backend.enqueue("Wants a person.")
        await post(message_event("/human"))
        await fake.wait_for(lambda: any(m.thread_ts == "" for m in fake.bot_messages("C1")))
        [ticket] = [m for m in fake.bot_messages("C1") if not m.thread_ts]

        # Send: one relay, though the click arrives twice.
        await post(message_event("What are your opening hours?"))
        await fake.wait_for(lambda: len(suggestions(ticket)) == 1)
        [first] = suggestions(ticket)
        assert "Sources: FAQ hours-1" in first.text and "We are open 9-17." in first.text
        labels = [b["text"]["text"] for b in fake.buttons(first)]
        assert labels == ["Send", "Edit", "Discard"]
        assert OPEN not in customer_sees()
        click = fake.click(first, "Send", user="U9", username="sam")
        await post(click)
        await post(click)
        await fake.wait_for(lambda: OPEN in customer_sees())

        # Edit: a modal prefilled with the reply; its submission goes out instead.
        await post(message_event("What are your opening hours?"))
        await fake.wait_for(lambda: len(suggestions(ticket)) == 2)
        second = suggestions(ticket)[1]
        await post(fake.click(second, "Edit", user="U9", username="sam"))
        await fake.wait_for(lambda: len(fake.views) == 1)
        [view] = fake.views
        assert view["blocks"][0]["element"]["initial_value"] == "We are open 9-17."
        edited = "We are open 9-17, on Thursdays until 20."
        await post(fake.submit_view(view, {"text": edited}, user="U9"))
        await fake.wait_for(lambda: f"Acme support: {edited}" in customer_sees())

        # Discard: nothing for the customer.
        await post(message_event("What are your opening hours?"))
        await fake.wait_for(lambda: len(suggestions(ticket)) == 3)
        third = suggestions(ticket)[2]
        seen = len(customer_sees())
        await post(fake.click(third, "Discard", user="U9", username="sam"))
        await fake.wait_for(
            lambda: any("Discarded suggestion #3" in m.text for m in fake.bot_messages("C1"))
        )
        assert len(customer_sees()) == seen

    # After a restart the first suggestion's Send still relays nothing more.
    await _stop(running)
    running = await _start(repository, backend, fake)
    async with aiohttp.ClientSession() as session:
        assert await deliver(session, running.url, SECRET, fake.click(first, "Send")) == 200
        await fake.wait_for(
            lambda: any("was sent already" in m.text for m in fake.bot_messages("C1"))
        )
    await _stop(running)
    assert customer_sees().count(OPEN) == 1
    assert customer_sees().count(f"Acme support: {edited}") == 1

    tickets = HandoffRepository(repository.db)
    states = [s.state for s in await tickets.suggestions.of_ticket(1)]
    assert states == ["sent", "edited", "discarded"]
    audit = [e.action for e in await TeamRepository(repository.db).audit_entries()]
    assert {"suggestion.sent", "suggestion.edited", "suggestion.discard"} <= set(audit)


async def test_the_edit_dialog_speaks_the_agents_language(
    sqlite_repository: Repository, backend: FakeBackend, fake: FakeSlack, tmp_path: Path
) -> None:
    repository = sqlite_repository
    path = tmp_path / "faq.csv"
    path.write_text(
        "id,question,answer\nhours-1,What are your opening hours?,We are open 9-17.\n",
        encoding="utf-8",
    )
    running = await _start(repository, backend, fake)
    assert running.manager.knowledge is not None and running.manager.languages is not None
    await running.manager.knowledge.import_file(path)
    # An admin's `/language sv` in the support workspace.
    await running.manager.languages.set_tenant("slack", "T1", "sv", by="slack:U1")
    async with aiohttp.ClientSession() as session:

        async def post(payload: dict[str, object]) -> None:
            assert await deliver(session, running.url, SECRET, payload) == 200

        backend.enqueue("Wants a person.")
        await post(message_event("/human"))
        await fake.wait_for(lambda: any(m.thread_ts == "" for m in fake.bot_messages("C1")))
        [ticket] = [m for m in fake.bot_messages("C1") if not m.thread_ts]
        backend.enqueue("Vi har öppet 9-17.")  # the reply translated for the agents
        await post(message_event("What are your opening hours?"))
        await fake.wait_for(
            lambda: any(
                "Föreslaget svar #1" in m.text and fake.buttons(m)
                for m in fake.bot_messages("C1", ticket.ts)
            )
        )
        [posted] = [m for m in fake.bot_messages("C1", ticket.ts) if fake.buttons(m)]
        labels = [b["text"]["text"] for b in fake.buttons(posted)]
        assert labels == ["Skicka", "Redigera", "Kasta"]

        await post(fake.click(posted, "Redigera", user="U9", username="sam"))
        await fake.wait_for(lambda: len(fake.views) == 1)
        [view] = fake.views
        assert view["title"]["text"] == "Redigera förslag"
        assert (view["submit"]["text"], view["close"]["text"]) == ("Skicka", "Avbryt")
        assert view["blocks"][0]["label"]["text"] == "Svar att skicka till kunden"
        assert view["blocks"][0]["element"]["initial_value"] == "We are open 9-17."
        edited = "We are open 9-17, on Thursdays until 20."
        await post(fake.submit_view(view, {"text": edited}, user="U9"))
        await fake.wait_for(
            lambda: f"Acme support: {edited}" in [unescape(m.text) for m in fake.bot_messages("D1")]
        )
    await _stop(running)
