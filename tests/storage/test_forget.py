"""/forget removes everything stored about a person, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, select, text

from storage.db import Database
from storage.knowledge_repo import KnowledgeRepository
from storage.models import faq_answers, metadata
from storage.repository import ConversationAddress, Repository
from tests.storage.support import legacy_role, make_event, store_legacy_role

SECRET = "my account number is 4242-SECRET"
LEGACY = "where is my parcel LEGACY-SECRET"


async def _everything(repository: Repository) -> str:
    """Every stored row of every table, as one string to search."""

    def op(conn: Connection) -> str:
        rows = []
        for table in metadata.sorted_tables:
            rows += [repr(tuple(row)) for row in conn.execute(select(table))]
        return "\n".join(rows)

    return await repository.db.run(op)


async def _draft(knowledge: KnowledgeRepository, address: ConversationAddress) -> str | None:
    return await knowledge.get_setting(f"conversation:{address.key}", "draft")


async def test_forget_removes_everything_about_the_person(repository: Repository) -> None:
    knowledge = KnowledgeRepository(repository.db)
    direct = ConversationAddress("test", "t1", "dm-u1")
    group = ConversationAddress("test", "t1", "group")

    # A direct chat: a question the knowledge base escalated, one it
    # answered, logged without an asker (as before the log recorded one),
    # one that failed, and an open draft.
    asked = await repository.accept(make_event(SECRET, chat="dm-u1", event_id="e1"), kind="chat")
    await repository.record_answer(asked, text=f"re: {SECRET}", kind="chat")
    await knowledge.record_answer(
        tenant="t1",
        conversation_key=direct.key,
        question=SECRET,
        path="escalated",
        entries=[],
        answer="A person will get back to you.",
        escalate_reason="no entry is close enough",
        user_id="test:u1",
    )
    legacy = await repository.accept(make_event(LEGACY, chat="dm-u1"), kind="chat")
    await repository.record_answer(legacy, text="It is on its way.", kind="chat")
    await knowledge.record_answer(
        tenant="t1",
        conversation_key=direct.key,
        question=LEGACY,
        path="verbatim",
        entries=[{"id": 1, "ref": "1", "score": 0.9}],
        answer="It is on its way.",
    )
    failed = await repository.accept(make_event("still there?", chat="dm-u1"), kind="chat")
    await repository.mark_failed(failed.inbound_id, "LLM failed")
    await knowledge.set_setting(f"conversation:{direct.key}", "draft", f"draft about {SECRET}")
    await store_legacy_role(repository, "test:u1", "agent")

    # A group: their message goes, the other person's (and the group's draft) stay.
    await repository.accept(make_event("hello all", chat="group"), kind="chat")
    theirs = await repository.accept(make_event("my printer", chat="group", user="u2"), kind="chat")
    await repository.record_answer(theirs, text="Try turning it off.", kind="chat")
    await knowledge.record_answer(
        tenant="t1",
        conversation_key=group.key,
        question="my printer",
        path="escalated",
        entries=[],
        answer="A person will get back to you.",
        escalate_reason="no entry is close enough",
        user_id="test:u2",
    )
    await knowledge.set_setting(f"conversation:{group.key}", "draft", "group announcement")

    result = await repository.forget_user("test:u1")

    assert result.messages == 6  # four questions (one in the group), two answers
    assert (result.events, result.faq_answers, result.escalations, result.drafts) == (4, 2, 1, 1)
    stored = await _everything(repository)
    for trace in (SECRET, LEGACY, "still there?", "hello all", "test:u1", "name-u1"):
        assert trace not in stored
    assert await _draft(knowledge, direct) is None
    assert await legacy_role(repository, "test:u1") is None

    # The other person keeps everything.
    assert "my printer" in stored and "Try turning it off." in stored
    assert await _draft(knowledge, group) == "group announcement"
    assert [e.user_id for e in await knowledge.escalations()] == ["test:u2"]
    assert [a["question"] for a in await knowledge.answers()] == ["my printer"]

    # The emptied event rows still recognise a redelivery, and nothing of
    # theirs is picked up again for answering.
    again = await repository.accept(make_event(SECRET, chat="dm-u1", event_id="e1"), kind="chat")
    assert again.status == "duplicate"
    assert await Repository(repository.db).pending("test") == []


async def test_forget_twice_and_unknown_people(repository: Repository) -> None:
    knowledge = KnowledgeRepository(repository.db)
    address = ConversationAddress("test", "t1", "c1")
    await repository.accept(make_event("first"), kind="chat")
    await repository.forget_user("test:u1")
    # Back again: the earlier, emptied rows do not make the chat "shared".
    await repository.accept(make_event("second"), kind="chat")
    await knowledge.set_setting(f"conversation:{address.key}", "draft", "a draft")
    result = await repository.forget_user("test:u1")
    assert (result.messages, result.events, result.drafts) == (1, 1, 1)
    nobody = await repository.forget_user("test:nobody")
    assert (nobody.messages, nobody.events, nobody.faq_answers, nobody.escalations) == (0,) * 4


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_at_0002(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    else:
        db = Database(request.getfixturevalue("postgres_url"))

        def wipe(conn: Connection) -> None:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))

        await db.run(wipe)
    await db.upgrade("0002_knowledge")
    yield db
    await db.dispose()


async def test_upgrade_names_the_askers_of_escalated_answers(database_at_0002: Database) -> None:
    db = database_at_0002
    now = datetime.now(UTC)

    def old_rows(conn: Connection) -> None:
        for answer_id in (1, 2):
            conn.execute(
                text(
                    "INSERT INTO faq_answers (id, tenant, conversation_key, question, path, "
                    "entries, answer, created_at) VALUES (:id, '', 'k', 'q', 'escalated', "
                    "'[]', 'a', :now)"
                ),
                {"id": answer_id, "now": now},
            )
        conn.execute(
            text(
                "INSERT INTO escalations (tenant, conversation_key, user_id, question, reason, "
                "answer_id, status, created_at) VALUES ('', 'k', 'test:u1', 'q', 'r', 1, "
                "'open', :now)"
            ),
            {"now": now},
        )

    await db.run(old_rows)
    await db.upgrade()
    askers = await db.run(
        lambda conn: conn.execute(
            select(faq_answers.c.id, faq_answers.c.user_id).order_by(faq_answers.c.id)
        ).all()
    )
    assert [tuple(row) for row in askers] == [(1, "test:u1"), (2, "")]


def test_conversation_keys_match_the_bots() -> None:
    # Drafts and the answer log are filed under the bot's ConversationRef.key;
    # /forget finds them by the storage-side key.
    from bot.types import ConversationRef

    for parts in (("telegram", "1", "42", ""), ("slack", "T1", "C9", "1700000000.1")):
        assert ConversationAddress(*parts).key == ConversationRef(*parts).key


def test_the_bot_and_storage_share_one_address_type() -> None:
    from dataclasses import FrozenInstanceError

    from bot.types import ConversationRef

    assert ConversationRef is ConversationAddress
    ref = ConversationRef("slack", "T1", "C9", "1700000000.1")
    assert ref == ConversationAddress("slack", "T1", "C9", "1700000000.1")
    assert len({ref, ConversationAddress("slack", "T1", "C9", "1700000000.1")}) == 1
    assert ref.key == "slack:T1:C9:1700000000.1"
    assert ConversationRef("telegram", "1", "42").thread == ""
    with pytest.raises(FrozenInstanceError):
        ref.chat = "C1"  # type: ignore[misc]
    assert not hasattr(ref, "__dict__")  # slots, as before
