"""Suggested replies in a ticket, inside one process: drafted from the
knowledge sources after the customer's message is relayed, posted in the
ticket's thread with Send / Edit / Discard, sent through the agent reply path
exactly once, and every outcome recorded.

Model-free retrieval (``HashingEmbedder`` for the FAQ and a dict of document
passages scored by shared words) and the scripted ``FakeBackend``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from bot.handoff.actions import Actor
from bot.handoff.config import HandoffSettings, parse_spaces
from bot.handoff.copilot import suggestion_body
from bot.handoff.desk import HelpDesk
from bot.handoff.suggested import changed_share, send
from bot.handoff.worker import OutboxWorker
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.passages import Passage
from bot.knowledge.policy import Policy
from bot.manager import ConversationManager
from bot.types import ConversationRef, Inbound, Reply, ReplyKind, TicketThread, Undeliverable
from llm.embeddings import HashingEmbedder
from llm.errors import LLMError
from llm.fake import FakeBackend
from storage.handoff_repo import HandoffRepository
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository
from storage.team_repo import TeamRepository
from tests.bot.knowledge.test_sources import DictSource
from tests.conftest import make_manager
from tests.support import Rendered, make_inbound

DOCS = {
    "shipping-eu": Passage(
        kind="document",
        id="shipping-eu",
        title="Shipping parcels to Europe",
        text="Parcels to Europe arrive within 3 working days.",
        origin="Shipping guide",
    ),
    "shipping-us": Passage(
        kind="document",
        id="shipping-us",
        title="Shipping parcels to America",
        text="Parcels to America arrive within 8 working days.",
        origin="Shipping guide",
    ),
    # For agents only: a customer never gets it, a suggestion may draw on it.
    "returns-internal": Passage(
        kind="document",
        id="returns-internal",
        title="Refund exceptions for damaged furniture",
        text="Damaged furniture is refunded in full without a return shipment.",
        origin="Agent handbook",
        internal=True,
    ),
    "leverans-se": Passage(
        kind="document",
        id="leverans-se",
        title="Leverans av paket inom Sverige",
        text="Paket inom Sverige kommer fram inom två arbetsdagar.",
        origin="Fraktguide",
    ),
}


class Channel:
    """A platform in memory that keeps each post's buttons."""

    def __init__(self) -> None:
        self.posts: list[tuple[ConversationRef, str, tuple[tuple[str, str], ...], str]] = []
        self._ids = itertools.count(100)

    async def post(
        self,
        ref: ConversationRef,
        text: str,
        *,
        reply_to: str = "",
        buttons: Sequence[tuple[str, str]] = (),
    ) -> str:
        message = str(next(self._ids))
        self.posts.append((ref, text, tuple(buttons), message))
        return message

    async def open_ticket(
        self, space: ConversationRef, *, title: str, text: str, ticket_id: int
    ) -> TicketThread:
        message = str(next(self._ids))
        return TicketThread(thread=message, message=message)

    def texts(self, chat: str) -> list[str]:
        return [text for ref, text, _, _ in self.posts if ref.chat == chat]


Desk = tuple[ConversationManager, OutboxWorker, dict[str, Channel]]


@pytest.fixture
async def desk(repository: Repository, backend: FakeBackend, tmp_path: Path) -> AsyncIterator[Desk]:
    kb = KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
        background=(),
        policy=Policy(verbatim_score=0.8, grounded_score=0.3, fallback_verbatim_score=0.9),
        refresh_interval=0.0,
    )
    kb.register(DictSource(DOCS))
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
    channels = {"test": Channel(), "slack": Channel()}
    worker = OutboxWorker(desk=help_desk, channels=channels)  # type: ignore[dict-item]
    yield manager, worker, channels
    await manager.aclose()


async def say(manager: ConversationManager, text: str, **kw: object) -> Reply:
    return await manager.handle(make_inbound(text, **kw), Rendered())  # type: ignore[arg-type]


def in_ticket(text: str, thread: str, *, user: str = "U9", event_id: str | None = None) -> Inbound:
    inbound = make_inbound(
        text, platform="slack", tenant="T1", chat="C1", thread=thread, user=user, event_id=event_id
    )
    return inbound


async def handed_off(
    manager: ConversationManager, worker: OutboxWorker, backend: FakeBackend
) -> str:
    """A customer who asked for a person; the ticket's thread."""
    backend.enqueue("Wants to know about opening hours.")
    await say(manager, "/human", user="alice")
    await worker.flush()
    [ticket] = await worker.tickets.open_tickets()
    return ticket.space_thread


async def customer_asks(manager: ConversationManager, worker: OutboxWorker, text: str) -> None:
    reply = await say(manager, text, user="alice")
    assert reply.kind is ReplyKind.SILENT
    assert manager.copilot is not None
    await manager.copilot.settle()
    await worker.flush()


def last_suggestion(channels: dict[str, Channel]) -> tuple[str, tuple[tuple[str, str], ...], str]:
    _, text, buttons, message = next(
        p for p in reversed(channels["slack"].posts) if "Suggested reply #" in p[1]
    )
    return text, buttons, message


async def test_a_quoted_suggestion_is_posted_after_the_relay_and_sent_once(
    desk: Desk, backend: FakeBackend, repository: Repository
) -> None:
    manager, worker, channels = desk
    thread = await handed_off(manager, worker, backend)
    requests = len(backend.requests)
    await customer_asks(manager, worker, "What are your opening hours?")

    texts = channels["slack"].texts("C1")
    relay_at = texts.index("name-alice: What are your opening hours?")
    text, buttons, _ = last_suggestion(channels)
    assert texts.index(text) > relay_at, "the relay goes first"
    assert "We are open 9-17." in text and "not sent to the customer" in text
    assert "Sources: FAQ hours-1" in text
    assert [label for label, _ in buttons] == ["Send", "Edit", "Discard"]
    assert suggestion_body(text) == "We are open 9-17."
    assert len(backend.requests) == requests, "a quoted suggestion asks no model"
    assert not any("9-17" in t for t in channels["test"].texts("c1")), "never relayed unsent"

    [(_, send_command)] = [b for b in buttons if b[0] == "Send"]
    click = in_ticket(send_command, thread, event_id="click-1")
    said = await manager.handle(click, Rendered())
    assert said.text == "Sent suggestion #1 to the customer."
    assert (await manager.handle(click, Rendered())).kind is ReplyKind.DUPLICATE
    again = await manager.handle(in_ticket(send_command, thread), Rendered())
    assert again.text == "Suggestion #1 was sent already."
    await worker.flush()
    customer = channels["test"].texts("c1")
    assert customer.count("Acme support: We are open 9-17.") == 1

    [suggestion] = await worker.tickets.suggestions.of_ticket(1)
    assert (suggestion.state, suggestion.agent, suggestion.path) == ("sent", "slack:U9", "quoted")
    team = TeamRepository(repository.db)
    actions = [e.action for e in await team.audit_entries(newest_first=False)]
    assert actions[-2:] == ["ticket.claim", "suggestion.sent"]


async def test_a_suggestion_draws_on_internal_documents_the_customer_never_gets(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, worker, channels = desk
    kb = manager.knowledge
    assert kb is not None
    question = "refund exceptions damaged furniture"
    customers = await kb.lookup(question, tenant="t1", limit=3)
    assert all(p.id != "returns-internal" for p in customers.passages)
    await handed_off(manager, worker, backend)
    backend.enqueue("Damaged furniture is refunded in full [1].")
    await customer_asks(manager, worker, question)
    text, _, _ = last_suggestion(channels)
    assert "returns-internal" in text or "Refund exceptions" in text, text


async def test_edit_discard_ignored_and_unsupported_are_recorded(
    desk: Desk, backend: FakeBackend, repository: Repository
) -> None:
    manager, worker, channels = desk
    thread = await handed_off(manager, worker, backend)

    # Edit on Telegram: a reply to the suggestion's message with the new text.
    await customer_asks(manager, worker, "What are your opening hours?")
    _, _, message = last_suggestion(channels)
    edited = Inbound(
        ref=ConversationRef("slack", "T1", "C1", thread),
        user="U9",
        text="We are open 9-17, and until 20 on Thursdays.",
        event_id="reply-1",
        user_name="Sam",
        meta={"reply_to": message},
    )
    assert (await manager.handle(edited, Rendered())).kind is ReplyKind.SILENT
    await worker.flush()
    assert channels["test"].texts("c1")[-1] == (
        "Acme support: We are open 9-17, and until 20 on Thursdays."
    )
    # The edited answer is one click from the knowledge base.
    [learn] = [p for p in channels["slack"].posts if p[2] == (("Propose as FAQ", "/learn"),)]
    assert "Sent your edit of suggestion #1" in learn[1]
    proposed = await say(manager, "/learn", **_agent(thread))
    assert "until 20 on Thursdays" in proposed.text

    # Discard: nothing goes to the customer.
    await customer_asks(manager, worker, "What are your opening hours?")
    sent_before = list(channels["test"].texts("c1"))
    discarded = await say(manager, "/suggest discard 2", **_agent(thread))
    assert discarded.text == "Discarded suggestion #2; nothing was sent."
    assert (await say(manager, "/suggest send 2", **_agent(thread))).text == (
        "Suggestion #2 was discarded."
    )
    await worker.flush()
    assert channels["test"].texts("c1") == sent_before

    # Ignored: the agent answers in their own words.
    await customer_asks(manager, worker, "What are your opening hours?")
    await say(manager, "We're open now, come by!", **_agent(thread))

    # Unsupported: the knowledge does not cover it, and says so.
    await customer_asks(manager, worker, "Do you sell volcano insurance?")
    unsupported = channels["slack"].posts[-1]
    assert unsupported[1].startswith("💡 No suggested reply (#4)")
    assert unsupported[2] == ()

    states = [(s.state, s.path) for s in await worker.tickets.suggestions.of_ticket(1)]
    assert states == [
        ("edited", "quoted"),
        ("discarded", "quoted"),
        ("ignored", "quoted"),
        ("unsupported", "unsupported"),
    ]
    first = (await worker.tickets.suggestions.of_ticket(1))[0]
    assert first.changed == changed_share("We are open 9-17.", first.sent_text) > 0

    [counts] = await TeamRepository(repository.db).suggestions.outcomes(["t1"], by="tenant")
    assert (counts.sent, counts.edited, counts.discarded, counts.ignored) == (0, 1, 1, 1)
    assert counts.acceptance == pytest.approx(1 / 3)
    [topic] = await worker.tickets.suggestions.discarded_topics(["t1"])
    assert (topic.topic, topic.discarded, topic.total) == ("What are your opening hours?", 1, 3)
    stats = await say(manager, "/stats", user="admin", chat="c2")
    assert "Suggested replies: 0 sent, 1 sent edited, 1 discarded, 1 ignored" in stats.text


async def test_a_written_suggestion_cites_documents_and_resolve_ignores_the_rest(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, worker, channels = desk
    thread = await handed_off(manager, worker, backend)
    backend.enqueue("Parcels to Europe arrive within 3 working days [1].")
    await customer_asks(manager, worker, "shipping parcels to europe please, how long")
    text, buttons, _ = last_suggestion(channels)
    assert "(written from the knowledge sources)" in text
    assert suggestion_body(text) == "Parcels to Europe arrive within 3 working days [1]."
    assert "Document shipping-eu" in text or "shipping-eu" in text
    prompt = backend.requests[-1].messages[-1].content
    assert "shipping parcels to europe please, how long" in prompt
    assert "Conversation so far:" in prompt
    assert len(buttons) == 3

    asked = await say(manager, "/suggest", **_agent(thread))
    assert asked.text == "Drafting a suggested reply for ticket #1…"
    backend.enqueue("Parcels to Europe arrive within 3 working days [1].")
    assert manager.copilot is not None
    await manager.copilot.settle()
    assert len(await worker.tickets.suggestions.of_ticket(1)) == 2

    await say(manager, "/resolve", **_agent(thread))
    states = {s.state for s in await worker.tickets.suggestions.of_ticket(1)}
    assert states == {"ignored"}


async def test_a_console_send_and_a_chat_send_write_the_same_audit_entries(
    desk: Desk, backend: FakeBackend, repository: Repository
) -> None:
    manager, worker, channels = desk
    thread = await handed_off(manager, worker, backend)
    await customer_asks(manager, worker, "What are your opening hours?")
    help_desk = manager.desk
    assert help_desk is not None
    ticket = await help_desk.tickets.get(1)
    assert ticket is not None
    said = await send(
        help_desk, ticket, Actor.at_console("console:owner", "Olga", "a1b2c3d4e5"), "1"
    )
    assert said == "Sent suggestion #1 to the customer."
    # The chat's Send of the same suggestion relays nothing more.
    chat = await say(manager, "/suggest send 1", **_agent(thread))
    assert chat.text == "Suggestion #1 was sent already."
    await worker.flush()
    assert channels["test"].texts("c1").count("Acme support: We are open 9-17.") == 1
    console_entries = [
        (e.action, e.target, e.details)
        for e in await TeamRepository(repository.db).audit_entries(newest_first=False)
    ][-2:]

    await customer_asks(manager, worker, "What are your opening hours?")
    await say(manager, "/release", **_agent(thread))
    await say(manager, "/suggest send 2", **_agent(thread))
    chat_entries = [
        (e.action, e.target, e.details)
        for e in await TeamRepository(repository.db).audit_entries(newest_first=False)
    ][-2:]
    assert [a for a, _, _ in console_entries] == [a for a, _, _ in chat_entries]
    assert console_entries[1][2].keys() == chat_entries[1][2].keys()
    assert console_entries[1][1] == "suggestion #1" and chat_entries[1][1] == "suggestion #2"


def _agent(thread: str) -> dict[str, str]:
    return {"platform": "slack", "tenant": "T1", "chat": "C1", "thread": thread, "user": "U9"}


def test_the_share_of_characters_changed() -> None:
    assert changed_share("abc", "abc") == 0.0
    assert changed_share("abcd", "abXd") == 0.25
    assert changed_share("", "new") == 1.0


async def test_forget_removes_the_suggestions_drafted_from_the_customers_words(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, worker, _ = desk
    await handed_off(manager, worker, backend)
    await customer_asks(manager, worker, "What are your opening hours? SECRET-4242")
    [suggestion] = await worker.tickets.suggestions.of_ticket(1)
    assert "SECRET-4242" in suggestion.question
    await say(manager, "/forget", user="alice")
    assert await worker.tickets.suggestions.of_ticket(1) == []


async def test_a_draft_never_holds_up_the_relay(desk: Desk, backend: FakeBackend) -> None:
    manager, worker, channels = desk
    await handed_off(manager, worker, backend)
    # A slow model: the written suggestion takes seconds, the relay does not wait.
    backend.enqueue("Parcels to Europe arrive within 3 working days [1].", chunk_delay=0.5)
    reply = await say(manager, "shipping parcels to europe please, how long", user="alice")
    assert reply.kind is ReplyKind.SILENT
    await worker.flush()
    texts = channels["slack"].texts("C1")
    assert texts[-1] == "name-alice: shipping parcels to europe please, how long"
    assert not any("Suggested reply #" in t for t in texts)
    assert manager.copilot is not None
    await manager.copilot.settle()
    await worker.flush()
    assert "Suggested reply #1" in channels["slack"].texts("C1")[-1]


async def test_a_suggestion_in_the_customers_language_carries_a_translation_for_the_agents(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, worker, channels = desk
    await handed_off(manager, worker, backend)
    help_desk, copilot = manager.desk, manager.copilot
    assert help_desk is not None and copilot is not None
    ticket = await help_desk.tickets.get(1)
    assert ticket is not None
    swedish = dataclasses.replace(ticket, details={**ticket.details, "language": "sv"})
    question = "hur lång tid tar leverans av paket inom sverige"
    accepted = await manager.accept(make_inbound(question, user="alice", event_id="sv-1"))
    backend.enqueue("Paket inom Sverige kommer fram inom två arbetsdagar [1].")
    backend.enqueue("Parcels within Sweden arrive within two working days [1].")
    suggestion = await copilot.suggest(
        accepted, swedish, question=question, cause="asked:sv-1", language="sv"
    )
    await worker.flush()
    assert suggestion is not None and suggestion.path == "written"
    assert suggestion.language == "sv"
    drafting, translating = backend.requests[-2:]
    assert "Swedish" in drafting.messages[0].content
    assert "into English" in translating.messages[0].content
    assert translating.messages[-1].content == suggestion.text

    text, _, _ = last_suggestion(channels)
    assert suggestion_body(text) == "Paket inom Sverige kommer fram inom två arbetsdagar [1]."
    marked = text.index("🌐 Machine translation into English, for you only")
    assert marked > text.index(suggestion.text), "the translation goes below the suggestion"
    assert "Parcels within Sweden arrive within two working days [1]." in text[marked:]

    # Send sends the customer's language, never the translation.
    thread = ticket.space_thread
    await say(manager, f"/suggest send {suggestion.id}", **_agent(thread))
    await worker.flush()
    to_customer = channels["test"].texts("c1")[-1]
    assert to_customer == "Acme support: Paket inom Sverige kommer fram inom två arbetsdagar [1]."


async def test_a_suggestion_already_in_the_agents_language_is_not_translated(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, worker, channels = desk
    await handed_off(manager, worker, backend)
    requests = len(backend.requests)
    await customer_asks(manager, worker, "What are your opening hours?")
    text, _, _ = last_suggestion(channels)
    assert "Machine translation" not in text
    assert len(backend.requests) == requests


class EditableChannel(Channel):
    """A platform whose messages can be edited: each message's texts in order."""

    name = "slack"
    edit_interval = 0.05
    # Refuse the finished suggestion as an edit, as a platform does a text
    # that no longer fits one message.
    too_long = False

    def __init__(self) -> None:
        super().__init__()
        self.shown: dict[str, list[str]] = {}
        self.buttons: dict[str, tuple[tuple[str, str], ...]] = {}

    async def post(
        self,
        ref: ConversationRef,
        text: str,
        *,
        reply_to: str = "",
        buttons: Sequence[tuple[str, str]] = (),
    ) -> str:
        message = await super().post(ref, text, reply_to=reply_to, buttons=buttons)
        self.shown[message] = [text]
        self.buttons[message] = tuple(buttons)
        return message

    async def edit(
        self,
        ref: ConversationRef,
        message: str,
        text: str,
        *,
        buttons: Sequence[tuple[str, str]] = (),
    ) -> None:
        if self.too_long and "Suggested reply #" in text:
            raise Undeliverable("the text needs 2 messages")
        self.shown[message].append(text)
        self.buttons[message] = tuple(buttons)


async def _streaming(desk: Desk, backend: FakeBackend) -> tuple[EditableChannel, str]:
    manager, worker, _ = desk
    thread = await handed_off(manager, worker, backend)
    slack = EditableChannel()
    worker.channels["slack"] = slack
    backend.enqueue("Parcels to Europe arrive within 3 working days [1].", chunk_delay=0.15)
    reply = await say(manager, "shipping parcels to europe please, how long", user="alice")
    assert reply.kind is ReplyKind.SILENT
    for _ in range(100):
        await worker.flush()
        if any("Drafting a suggested reply" in t for t in slack.texts("C1")):
            break
        await asyncio.sleep(0.02)
    return slack, thread


async def test_a_written_suggestion_streams_and_ends_as_one_message_with_buttons(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, worker, _ = desk
    slack, _ = await _streaming(desk, backend)
    assert manager.copilot is not None
    await manager.copilot.settle()
    await worker.flush()
    [(message, texts)] = [(m, t) for m, t in slack.shown.items() if "Drafting a" in t[0]]
    assert texts[-1].startswith("💡 Suggested reply #1 (written")
    assert any("Parcels to" in t and "Drafting a" in t for t in texts[1:-1]), texts
    assert [label for label, _ in slack.buttons[message]] == ["Send", "Edit", "Discard"]
    assert not any("Suggested reply #" in t for _, t, _, _ in slack.posts), "edited, not posted"
    # The post's message is the streamed one: a reply to it edits the suggestion.
    rows = {r["key"]: r for r in await worker.tickets.outbox_rows()}
    assert rows["suggestion:1"]["sent_message"] == message
    # A replayed cause drafts and posts nothing more.
    help_desk = manager.desk
    assert help_desk is not None
    ticket = await help_desk.tickets.get(1)
    assert ticket is not None
    [suggestion] = await worker.tickets.suggestions.of_ticket(1)
    accepted = await manager.accept(make_inbound("again", user="alice", event_id="again-1"))
    again = await manager.copilot.suggest(
        accepted, ticket, question="again", cause=suggestion.cause
    )
    assert again is None
    await worker.flush()
    assert slack.shown[message] == texts
    assert [t for t in slack.texts("C1") if "Suggested reply #" in t] == []


async def test_a_streaming_suggestion_the_ticket_closed_on_is_withdrawn(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, worker, _ = desk
    slack, thread = await _streaming(desk, backend)
    await say(manager, "/resolve", **_agent(thread))
    assert manager.copilot is not None
    await manager.copilot.settle()
    await worker.flush()
    [texts] = [t for t in slack.shown.values() if "Drafting a" in t[0]]
    assert texts[-1].startswith("💡 The suggested reply being drafted was withdrawn")
    assert await worker.tickets.suggestions.of_ticket(1) == []
    assert not any("Suggested reply #" in t for t in slack.texts("C1"))


async def test_a_placeholder_not_yet_sent_is_never_sent_after_the_suggestion(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, worker, _ = desk
    await handed_off(manager, worker, backend)
    slack = EditableChannel()
    worker.channels["slack"] = slack
    backend.enqueue("Parcels to Europe arrive within 3 working days [1].", chunk_delay=0.1)
    await say(manager, "shipping parcels to europe please, how long", user="alice")

    async def placeholder() -> dict[str, object] | None:
        rows = await worker.tickets.outbox_rows()
        return next((r for r in rows if str(r["key"]).startswith("suggestion-live:")), None)

    for _ in range(100):
        if await placeholder() is not None:
            break
        await asyncio.sleep(0.02)
    row = await placeholder()
    assert row is not None
    # The platform is slow to take it: still waiting when the suggestion is done.
    await worker.tickets.defer(int(row["id"]), delay=60)  # type: ignore[call-overload]
    assert manager.copilot is not None
    await manager.copilot.settle()
    await worker.flush()
    row = await placeholder()
    assert row is not None and (row["status"], row["error"]) == (
        "failed",
        "superseded by the finished suggestion",
    )
    [posted] = [p for p in slack.posts if "Suggested reply #1" in p[1]]
    assert [label for label, _ in posted[2]] == ["Send", "Edit", "Discard"]
    assert not any("Drafting a" in t for t in slack.texts("C1"))


async def test_a_customer_writing_swedish_gets_a_swedish_suggestion(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, worker, channels = desk
    await handed_off(manager, worker, backend)
    backend.enqueue("Paket inom Sverige kommer fram inom två arbetsdagar [1].")
    backend.enqueue("Parcels within Sweden arrive within two working days [1].")
    await customer_asks(manager, worker, "Hur lång tid tar leverans av paket inom Sverige?")
    [suggestion] = await worker.tickets.suggestions.of_ticket(1)
    assert (suggestion.language, suggestion.path) == ("sv", "written")
    assert "Swedish" in backend.requests[-2].messages[0].content
    text, _, _ = last_suggestion(channels)
    assert "🌐 Machine translation into English" in text
    assert "Parcels within Sweden" in text


async def test_a_failed_translation_still_posts_the_suggestion(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, worker, channels = desk
    await handed_off(manager, worker, backend)
    backend.enqueue("Paket inom Sverige kommer fram inom två arbetsdagar [1].")
    backend.enqueue(error=LLMError("the model server answered 500"))
    await customer_asks(manager, worker, "Hur lång tid tar leverans av paket inom Sverige?")
    text, buttons, _ = last_suggestion(channels)
    assert suggestion_body(text) == "Paket inom Sverige kommer fram inom två arbetsdagar [1]."
    assert "Machine translation" not in text
    assert len(buttons) == 3


async def test_a_suggestion_the_streamed_message_cannot_hold_is_posted_anew(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, worker, _ = desk
    slack, _ = await _streaming(desk, backend)
    slack.too_long = True
    assert manager.copilot is not None
    await manager.copilot.settle()
    await worker.flush()
    [texts] = [t for t in slack.shown.values() if "Drafting a" in t[0]]
    assert texts[-1] == "💡 This draft was finished in a new message below."
    [posted] = [p for p in slack.posts if "Suggested reply #1" in p[1]]
    assert [label for label, _ in posted[2]] == ["Send", "Edit", "Discard"]
    rows = {r["key"]: r for r in await worker.tickets.outbox_rows()}
    assert rows["suggestion:1"]["sent_message"] == posted[3]
