"""Repository behaviour on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from storage.db import normalize_url
from storage.errors import DatabaseConfigError
from storage.models import inbound_events, messages
from storage.repository import ConversationAddress, Repository
from tests.storage.support import make_event


async def test_accept_stores_event_and_message(repository: Repository) -> None:
    stored = await repository.accept(make_event("hello", event_id="e1"), kind="chat")
    assert stored.status == "new"
    assert stored.message_id is not None
    history = await repository.history(stored.conversation_id, upto_message_id=None, limit=10)
    assert [(h.role, h.text) for h in history] == [("user", "hello")]


async def test_redelivery_while_processing_is_duplicate(repository: Repository) -> None:
    first = await repository.accept(make_event("hi", event_id="e1"), kind="chat")
    again = await repository.accept(make_event("hi", event_id="e1"), kind="chat")
    assert again.status == "duplicate"
    assert again.inbound_id == first.inbound_id
    count = await repository.db.run(
        lambda conn: conn.execute(select(func.count()).select_from(messages)).scalar()
    )
    assert count == 1


async def test_redelivery_after_answer_is_duplicate(repository: Repository) -> None:
    first = await repository.accept(make_event("hi", event_id="e1"), kind="chat")
    await repository.record_answer(first, text="hello!", kind="chat", completion_tokens=2)
    again = await repository.accept(make_event("hi", event_id="e1"), kind="chat")
    assert again.status == "duplicate"


async def test_redelivery_after_failure_is_retried(repository: Repository) -> None:
    first = await repository.accept(make_event("hi", event_id="e1"), kind="chat")
    await repository.mark_failed(first.inbound_id, "LLM failed")
    again = await repository.accept(make_event("hi", event_id="e1"), kind="chat")
    assert again.status == "retry"
    assert again.message_id == first.message_id


async def test_same_event_id_on_other_platform_is_new(repository: Repository) -> None:
    await repository.accept(make_event("a", event_id="e1", platform="p1"), kind="chat")
    other = await repository.accept(make_event("b", event_id="e1", platform="p2"), kind="chat")
    assert other.status == "new"


async def test_history_is_scoped_and_ordered(repository: Repository) -> None:
    a = await repository.accept(make_event("q1", chat="A"), kind="chat")
    b = await repository.accept(make_event("other", chat="B"), kind="chat")
    a2 = await repository.accept(make_event("q2", chat="A"), kind="chat")
    # The first answer is stored after the second question arrived.
    await repository.record_answer(a, text="a1", kind="chat")
    await repository.record_answer(b, text="b1", kind="chat")
    full = await repository.history(a.conversation_id, upto_message_id=None, limit=10)
    assert [h.text for h in full] == ["q1", "a1", "q2"]
    upto_first = await repository.history(a.conversation_id, upto_message_id=a.message_id, limit=10)
    assert [h.text for h in upto_first] == ["q1"]
    newest = await repository.history(a2.conversation_id, upto_message_id=None, limit=2)
    assert [h.text for h in newest] == ["a1", "q2"]


async def test_commands_stay_out_of_history(repository: Repository) -> None:
    s = await repository.accept(make_event("/help"), kind="command")
    await repository.record_answer(s, text="commands...", kind="command")
    assert await repository.history(s.conversation_id, upto_message_id=None, limit=10) == []


async def test_pending_returns_unanswered_from_a_dead_process(repository: Repository) -> None:
    stored = await repository.accept(make_event("lost?", event_id="e9", chat="c9"), kind="chat")
    answered = await repository.accept(make_event("ok", event_id="e10"), kind="chat")
    await repository.record_answer(answered, text="fine", kind="chat")
    # A new process (new worker id) over the same tables.
    restarted = Repository(repository.db, claim_lease=0 if repository.dialect != "sqlite" else 300)
    pending = await restarted.pending("test")
    assert [p.event.event_id for p in pending] == ["e9"]
    assert pending[0].event.text == "lost?"
    assert pending[0].event.conversation == ConversationAddress("test", "t1", "c9", "")
    assert pending[0].stored.message_id == stored.message_id
    # Claimed now: neither another recovery nor a redelivery answers it again.
    if repository.dialect == "sqlite":
        assert await restarted.pending("test") == []
    # A live worker beside it (the PostgreSQL case) leaves a fresh claim alone.
    other = Repository(repository.db)
    other.single_process = False
    assert await other.pending("test") == []
    again = await other.accept(make_event("lost?", event_id="e9"), kind="chat")
    assert again.status == "duplicate"


async def test_reset_and_forget(repository: Repository) -> None:
    mine = await repository.accept(make_event("my secret", user="u1"), kind="chat")
    await repository.record_answer(mine, text="noted", kind="chat")
    theirs = await repository.accept(make_event("hello", user="u2"), kind="chat")
    await repository.record_answer(theirs, text="hi", kind="chat")
    result = await repository.forget_user("test:u1")
    assert result.messages == 2
    history = await repository.history(mine.conversation_id, upto_message_id=None, limit=10)
    assert [h.text for h in history] == ["hello", "hi"]
    texts = await repository.db.run(
        lambda conn: conn.execute(select(inbound_events.c.text)).scalars().all()
    )
    assert "my secret" not in texts
    assert await repository.reset_conversation(mine.conversation_id) == 2
    assert await repository.history(mine.conversation_id, upto_message_id=None, limit=10) == []


async def test_stats(repository: Repository) -> None:
    for i in range(4):
        s = await repository.accept(make_event("q", chat=f"c{i % 2}"), kind="chat")
        await repository.record_answer(
            s,
            text="a",
            kind="chat",
            prompt_tokens=10,
            completion_tokens=5,
            latency_ms=100 * (i + 1),
        )
    stats = await repository.stats()
    assert stats.conversations == 2
    assert stats.messages == 8
    assert (stats.prompt_tokens, stats.completion_tokens) == (40, 20)
    assert stats.latency_p50_ms == 200
    assert stats.latency_p95_ms == 400


async def test_move_conversation_merges(repository: Repository) -> None:
    old = ConversationAddress("test", "t1", "-100", "")
    new = ConversationAddress("test", "t1", "-200", "")
    s = await repository.accept(make_event("before", chat="-100"), kind="chat")
    await repository.move_conversation(old, new)
    s2 = await repository.accept(make_event("after", chat="-200"), kind="chat")
    assert s2.conversation_id == s.conversation_id
    await repository.set_active(new, False)
    assert await repository.is_active(new) is False


async def test_upgrade_is_idempotent(repository: Repository) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import storage.db

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(storage.db.__file__).with_name("migrations")))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    await repository.db.upgrade()
    assert head is not None and head >= "0004_handoff"
    assert await repository.db.current_revision() == head


@pytest.mark.parametrize(
    ("raw", "driver"),
    [
        ("sqlite:///x.db", "sqlite+pysqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite+pysqlite"),
        ("postgresql://u@h/db", "postgresql+asyncpg"),
        ("postgres://u@h/db", "postgresql+asyncpg"),
        ("postgresql+psycopg2://u@h/db", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg"),
    ],
)
def test_database_urls_map_to_async_drivers(raw: str, driver: str) -> None:
    assert normalize_url(raw).drivername == driver


@pytest.mark.parametrize("raw", ["mysql://u@h/db", "not a url"])
def test_unsupported_database_urls_explain(raw: str) -> None:
    with pytest.raises(DatabaseConfigError, match="DATABASE_URL"):
        normalize_url(raw)
