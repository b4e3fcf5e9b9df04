"""``reset_conversation`` and ``forget_user`` bounded by the command that asked:
what was stored after it stays (SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import select

from storage.models import inbound_events, users
from storage.repository import Repository, StoredInbound
from tests.storage.support import make_event


async def said(repository: Repository, conversation_id: int) -> list[str]:
    history = await repository.history(conversation_id, upto_message_id=None, limit=50)
    return [h.text for h in history]


async def ask(repository: Repository, text: str, user: str = "u1") -> StoredInbound:
    kind = "command" if text.startswith("/") else "chat"
    return await repository.accept(make_event(text, user=user), kind=kind)


async def test_reset_keeps_what_was_stored_after_it(repository: Repository) -> None:
    first = await ask(repository, "remember teal")
    reset = await ask(repository, "/reset")
    later = await ask(repository, "what is the capital of Peru?")
    # The answer to the first question is recorded after both arrived.
    await repository.record_answer(first, text="noted", kind="chat")
    removed = await repository.reset_conversation(
        reset.conversation_id, upto_inbound=reset.inbound_id
    )
    assert removed == 3  # the question, its answer and the /reset
    await repository.record_answer(later, text="Lima", kind="chat")
    assert await said(repository, later.conversation_id) == ["what is the capital of Peru?", "Lima"]


async def test_reset_of_one_member_keeps_the_others_words(repository: Repository) -> None:
    mine = await ask(repository, "my order is 4711", user="u1")
    await repository.record_answer(mine, text="found 4711", kind="chat")
    theirs = await ask(repository, "opening hours?", user="u2")
    await repository.record_answer(theirs, text="9-17", kind="chat")
    reset = await ask(repository, "/reset", user="u1")
    later = await ask(repository, "one more thing", user="u1")
    removed = await repository.reset_conversation(
        reset.conversation_id, upto_inbound=reset.inbound_id, author="test:u1"
    )
    assert removed == 3
    assert await said(repository, later.conversation_id) == [
        "opening hours?",
        "9-17",
        "one more thing",
    ]


async def test_forget_keeps_what_was_stored_after_it(repository: Repository) -> None:
    first = await ask(repository, "my address is 1 Main St")
    await repository.record_answer(first, text="noted", kind="chat")
    forget = await ask(repository, "/forget")
    later = await ask(repository, "and my parcel?")
    result = await repository.forget_user("test:u1", upto_inbound=forget.inbound_id)
    assert result.messages == 3
    assert result.events == 2

    def rows(conn):  # type: ignore[no-untyped-def]
        events = conn.execute(
            select(
                inbound_events.c.text, inbound_events.c.user_id, inbound_events.c.status
            ).order_by(inbound_events.c.id)
        ).all()
        profile = conn.execute(select(users.c.name).where(users.c.platform_user == "test:u1"))
        return [tuple(e) for e in events], profile.scalar()

    events, profile = await repository.db.run(rows)
    assert events[0] == ("", "", "answered")
    assert events[2] == ("and my parcel?", "test:u1", "processing")
    # The later message keeps its sender's profile.
    assert profile == "name-u1"
    # It is answered as usual, with a history that starts with it.
    assert await repository.record_answer(later, text="on its way", kind="chat") is not None
    assert await said(repository, later.conversation_id) == ["and my parcel?", "on its way"]

    # Without a bound (the console's erasure) everything goes, the profile too.
    result = await repository.forget_user("test:u1")
    assert result.messages == 2
    _, profile = await repository.db.run(rows)
    assert profile is None
