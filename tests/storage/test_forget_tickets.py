"""A group member's words leave a ticket that is another member's: its turns
(with the answers to them), its summary and its post; on SQLite and PostgreSQL."""

from __future__ import annotations

from storage.handoff_repo import HandoffRepository
from storage.repository import ConversationAddress, Repository
from storage.team_repo import TeamRepository
from tests.storage.support import make_event
from tests.storage.words import where_written

MARK = "IBEX-2290"


async def test_a_members_words_leave_the_ticket_of_another_member(repository: Repository) -> None:
    tickets = HandoffRepository(repository.db)
    asked = await repository.accept(
        make_event(f"is {MARK} my tracking code?", chat="grp", user="alice"), kind="chat"
    )
    await repository.record_answer(asked, text=f"Yes, {MARK} is your code.", kind="chat")
    bob = await repository.accept(
        make_event("I need a person", chat="grp", user="bob"), kind="chat"
    )
    turns = [
        {"role": "user", "text": f"is {MARK} my tracking code?"},
        {"role": "assistant", "text": f"Yes, {MARK} is your code."},
        {"role": "user", "text": "I need a person"},
        {"role": "assistant", "text": "Someone will join."},
    ]
    ticket, _ = await tickets.open_ticket(
        bob.conversation_id,
        trigger="request",
        customer="test:bob",
        customer_name="Bob",
        space="slack:T1/C1",
        space_chat="C1",
        details={"turns": turns, "candidates": []},
    )
    await tickets.set_summary(ticket.id, f"Alice asked about {MARK}; Bob wants a person.")
    space = ConversationAddress("slack", "T1", "C1")
    await tickets.enqueue(
        f"ticket:{ticket.id}",
        space,
        f"#1 Bob\n{turns[0]['text']}",
        kind="ticket",
        ticket_id=ticket.id,
    )
    await tickets.enqueue(
        f"relay:{asked.inbound_id}", space, f"Alice: {MARK}", kind="to_ticket", ticket_id=ticket.id
    )

    await tickets.forget("test:alice")
    await TeamRepository(repository.db).forget("test:alice")
    await repository.forget_user("test:alice")

    assert await where_written(repository.db, MARK) == []
    kept = await tickets.get(ticket.id)
    assert kept is not None and kept.customer == "test:bob"
    assert kept.details["turns"] == turns[2:]
    assert kept.summary == ""
