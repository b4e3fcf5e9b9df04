"""Ticket actions are one path: what an agent does with a chat command in the
support space and with a button of the operator console leaves the same
audit entries and sends the customer the same notices, rating invitation
included. The console's buttons are driven through ``CONSOLE_ACTIONS``, the
table its ticket page dispatches on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.handoff.actions import CONSOLE_ACTIONS, Actor
from bot.handoff.config import HandoffSettings, parse_spaces
from bot.handoff.desk import HelpDesk
from bot.handoff.worker import OutboxWorker
from bot.manager import ConversationManager
from bot.team.service import RATING_BUTTONS, TICKET_INVITATION
from llm.fake import FakeBackend
from storage.handoff_repo import HandoffRepository, Ticket
from storage.repository import Repository
from tests.bot.handoff.test_handoff import FakeChannel, agent, say
from tests.conftest import make_manager

Desk = tuple[ConversationManager, HelpDesk, OutboxWorker]


@pytest.fixture
async def desk(repository: Repository, backend: FakeBackend) -> AsyncIterator[Desk]:
    help_desk = HelpDesk(
        settings=HandoffSettings(spaces=parse_spaces("slack:T1/C1"), signature="Acme support"),
        tickets=HandoffRepository(repository.db),
    )
    manager = make_manager(repository, backend, desk=help_desk)
    channels = {"test": FakeChannel("test"), "slack": FakeChannel("slack")}
    yield manager, help_desk, OutboxWorker(desk=help_desk, channels=channels)


async def _ticket_of(manager: ConversationManager, desk: HelpDesk, chat: str) -> Ticket:
    """A customer in ``chat`` asks for a person; their ticket, posted."""
    await say(manager, "/human", chat=chat, user=f"customer-{chat}")
    tickets = await desk.tickets.open_tickets()
    return next(t for t in tickets if t.customer == f"test:customer-{chat}")


async def _audited(manager: ConversationManager, ticket: Ticket) -> list[tuple[str, Any]]:
    """The audit trail of one ticket, oldest first: (action, details)."""
    entries = await manager.team.repository.audit_entries(newest_first=False)
    return [(e.action, e.details) for e in entries if e.target == f"ticket #{ticket.id}"]


async def _console(desk: HelpDesk, action: str, ticket_id: int, form: str, text: str = "") -> str:
    ticket = await desk.tickets.get(ticket_id)
    assert ticket is not None
    said = await CONSOLE_ACTIONS[action](
        desk, ticket, Actor.at_console("console:owner", "Robin", form), text
    )
    return said or ""


def _resolved_notice(rows: list[dict[str, Any]], ticket: Ticket) -> dict[str, Any]:
    [row] = [r for r in rows if r["key"] == f"resolved:{ticket.id}"]
    return row


async def test_chat_and_console_ticket_actions_write_the_same_audit_entries(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, help_desk, worker = desk
    backend.enqueue("Wants a refund.")
    by_chat = await _ticket_of(manager, help_desk, "c1")
    await worker.flush()
    thread = "100"  # where the fake platform opened the first ticket's thread
    assert "is yours" in await _text(manager, "/claim", thread)
    assert "waiting again" in await _text(manager, "/release", thread)
    assert "is yours" in await _text(manager, "claim", thread)
    assert "Resolved ticket" in await _text(manager, "/resolve", thread)

    backend.enqueue("Wants a refund too.")
    by_console = await _ticket_of(manager, help_desk, "c2")
    assert "is yours" in await _console(help_desk, "claim", by_console.id, "form-claim-1")
    assert "waiting again" in await _console(help_desk, "release", by_console.id, "form-rel-1")
    assert "Reply queued" in await _console(
        help_desk, "reply", by_console.id, "form-reply-1", text="Refunded."
    )
    assert "Resolved ticket" in await _console(help_desk, "resolve", by_console.id, "form-res-1")

    chat_trail = await _audited(manager, by_chat)
    console_trail = await _audited(manager, by_console)
    assert [action for action, _ in chat_trail] == [
        "ticket.claim",
        "ticket.release",
        "ticket.claim",
        "ticket.resolve",
    ]
    # A reply to a waiting ticket claims it, exactly as "claim" does.
    assert [action for action, _ in console_trail] == [action for action, _ in chat_trail]
    assert {str(d) for _, d in chat_trail} == {str({"conversation": by_chat.conversation_id})}
    assert {str(d) for _, d in console_trail} == {str({"conversation": by_console.conversation_id})}


async def test_a_console_resolve_invites_a_rating_like_a_chat_resolve(
    desk: Desk, backend: FakeBackend
) -> None:
    manager, help_desk, worker = desk
    backend.enqueue("Needs a refund.")
    by_chat = await _ticket_of(manager, help_desk, "c1")
    await worker.flush()
    await _text(manager, "Done, refunded.", "100")
    await _text(manager, "/resolve", "100")

    backend.enqueue("Needs a refund too.")
    by_console = await _ticket_of(manager, help_desk, "c2")
    await _console(help_desk, "reply", by_console.id, "form-reply-2", text="Done, refunded.")
    assert "Resolved ticket" in await _console(help_desk, "resolve", by_console.id, "form-res-2")
    # Twice, as a double submit would: nothing more is sent or invited.
    assert "already closed" in await _console(help_desk, "resolve", by_console.id, "form-res-3")

    rows = await help_desk.tickets.outbox_rows()
    chat_notice = _resolved_notice(rows, by_chat)
    console_notice = _resolved_notice(rows, by_console)
    assert chat_notice["text"].endswith("\n\n" + TICKET_INVITATION)
    assert console_notice["text"] == chat_notice["text"]
    assert console_notice["buttons"] == chat_notice["buttons"]
    assert [tuple(b) for b in console_notice["buttons"]] == [tuple(b) for b in RATING_BUTTONS]
    repository = manager.team.repository
    since = datetime.now(UTC) - timedelta(hours=1)
    for ticket in (by_chat, by_console):
        invitation = await repository.open_invitation(ticket.conversation_id, since=since)
        assert invitation is not None and invitation.ticket_id == ticket.id
    # The customer's thumbs-up after a console resolve is stored against the ticket.
    thanked = await say(manager, "👍", chat="c2", user="customer-c2")
    assert "Thanks" in thanked.text
    [rating] = await manager.team.repository.ratings()
    assert (rating.ticket_id, rating.score) == (by_console.id, 1)


async def _text(manager: ConversationManager, text: str, thread: str) -> str:
    """An agent writes ``text`` in the support space, in ``thread``."""
    return (await say(manager, text, **agent(thread))).text
