"""Real database faults surface as ``StorageError``, and leak no customer data.

Nothing here is mocked: PostgreSQL goes away (a closed port, or a proxy in
front of the real server that the test shuts), an SQLite file is locked by
another connection or runs out of room.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import sqlite3
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from storage.db import Database
from storage.errors import StorageError
from storage.handoff_repo import HandoffRepository
from storage.knowledge_repo import EntryInput, KnowledgeRepository
from storage.languages_repo import LanguageRepository
from storage.models import users
from storage.repository import ConversationAddress, Repository, StoredInbound
from storage.slack_repo import SlackInstallation, SlackRepository, TokenCipher
from storage.team_repo import TeamRepository
from tests.conftest import _fresh_pg_repository
from tests.faults import TcpProxy
from tests.storage.support import make_event
from tests.support import free_port

MARKER = "CUSTOMER-SECRET-7f3a"
HERE = ConversationAddress("test", "t1", "c1")
THERE = ConversationAddress("test", "t1", "c2")
STORED = StoredInbound(inbound_id=1, conversation_id=1, message_id=1, status="new")

Call = Callable[[Repository, KnowledgeRepository], Awaitable[object]]

REPOSITORY_CALLS: dict[str, Call] = {
    "accept": lambda r, k: r.accept(make_event("hi"), kind="chat"),
    "pending": lambda r, k: r.pending("test"),
    "record_answer": lambda r, k: r.record_answer(STORED, text="hello", kind="chat"),
    "mark_failed": lambda r, k: r.mark_failed(1, "LLM failed"),
    "history": lambda r, k: r.history(1, upto_message_id=None, limit=10),
    "reset_conversation": lambda r, k: r.reset_conversation(1),
    "set_active": lambda r, k: r.set_active(HERE, False),
    "is_active": lambda r, k: r.is_active(HERE),
    "move_conversation": lambda r, k: r.move_conversation(HERE, THERE),
    "forget_user": lambda r, k: r.forget_user("test:u1"),
    "stats": lambda r, k: r.stats(),
    "mark_handled": lambda r, k: r.mark_handled(STORED),
    "conversation": lambda r, k: r.conversation(1),
    "last_customer": lambda r, k: r.last_customer(1),
    "last_customer_text": lambda r, k: r.last_customer_text(1),
    "renew_claims": lambda r, k: _holding(r).renew_claims(),
    "take_lease": lambda r, k: r.take_lease("telegram-poll:1"),
    "release_leases": lambda r, k: _holding(r).release_leases(),
}


def _holding(r: Repository) -> Repository:
    """A repository with a claim and a lease to renew (they go to the database)."""
    r._hold(1, 1, started=True)
    r._leases.add("telegram-poll:1")
    return r


def _h(r: Repository) -> HandoffRepository:
    return HandoffRepository(r.db)


HANDOFF_CALLS: dict[str, Call] = {
    "open_ticket": lambda r, k: _h(r).open_ticket(
        1,
        trigger="request",
        customer="test:u1",
        customer_name="u1",
        space="slack:T1/C1",
        space_chat="C1",
        details={},
    ),
    "open_for": lambda r, k: _h(r).open_for(1),
    "get": lambda r, k: _h(r).get(1),
    "in_space": lambda r, k: _h(r).in_space("C1", thread="1.2"),
    "set_posted": lambda r, k: _h(r).set_posted(1, thread="1.2", message="1.2"),
    "set_summary": lambda r, k: _h(r).set_summary(1, "summary"),
    "transition": lambda r, k: _h(r).transition(1, "human", by="slack:U1"),
    "note": lambda r, k: _h(r).note(1, "note", "slack:U1", "text"),
    "events": lambda r, k: _h(r).events(1),
    "open_tickets": lambda r, k: _h(r).open_tickets(),
    "due_reminders": lambda r, k: _h(r).due_reminders(timedelta(minutes=10)),
    "mark_reminded": lambda r, k: _h(r).mark_reminded(1, datetime.now(UTC)),
    "idle": lambda r, k: _h(r).idle(timedelta(hours=1)),
    "consecutive_failures": lambda r, k: _h(r).consecutive_failures(1),
    "enqueue": lambda r, k: _h(r).enqueue("k", HERE, "text", kind="notice"),
    "claim_due": lambda r, k: _h(r).claim_due(),
    "sent": lambda r, k: _h(r).sent(1),
    "renew": lambda r, k: _h(r).renew(1),
    "retry": lambda r, k: _h(r).retry(1, "error", delay=1.0),
    "defer": lambda r, k: _h(r).defer(1, delay=1.0),
    "outbox_rows": lambda r, k: _h(r).outbox_rows(),
    "forget": lambda r, k: _h(r).forget("test:u1"),
    "recent_conversations": lambda r, k: _h(r).recent_conversations(),
    "unconfirmed": lambda r, k: _h(r).unconfirmed(1, "timed out"),
    "resend": lambda r, k: _h(r).resend(1, space_chat="C1"),
}
KNOWLEDGE_CALLS: dict[str, Call] = {
    "upsert_many": lambda r, k: k.upsert_many(
        "", [(EntryInput("q?", "a."), None)], embedding_model=""
    ),
    "set_embeddings": lambda r, k: k.set_embeddings({1: b"\0" * 4}, embedding_model="m"),
    "use_embedding_model": lambda r, k: k.use_embedding_model({1: b"\0" * 4}, "m"),
    "text_vectors": lambda r, k: k.text_vectors("m", ["d"]),
    "set_text_vectors": lambda r, k: k.set_text_vectors("m", {"d": b"\0" * 4}),
    "prune_text_vectors": lambda r, k: k.prune_text_vectors("m", {"d"}),
    "remove": lambda r, k: k.remove("", "1"),
    "get": lambda r, k: k.get("", "q:q"),
    "entries": lambda r, k: k.entries(),
    "signature": lambda r, k: k.signature(),
    "keyword_search": lambda r, k: k.keyword_search("refund policy", tenant=""),
    "record_answer": lambda r, k: k.record_answer(
        tenant="", conversation_key="k", question="q", path="model", entries=[], answer="a"
    ),
    "answers": lambda r, k: k.answers(),
    "escalations": lambda r, k: k.escalations(),
    "set_escalation_status": lambda r, k: k.set_escalation_status(1, "closed"),
    "get_setting": lambda r, k: k.get_setting("tenant:t1", "mode"),
    "set_setting": lambda r, k: k.set_setting("tenant:t1", "mode", "faq"),
    "add_phrasing": lambda r, k: k.add_phrasing(
        tenant="t1", entry_id=1, text="q", user_id="u", embedding=b"\0" * 4, embedding_model="m"
    ),
    "phrasings": lambda r, k: k.phrasings(),
    "share_phrasing": lambda r, k: k.share_phrasing(1),
    "set_phrasing_embeddings": lambda r, k: k.set_phrasing_embeddings(
        {1: b"\0" * 4}, embedding_model="m"
    ),
    "store_versions": lambda r, k: k.store_versions(
        "", "sv", [(EntryInput(question="Fråga?", answer="Svar."), None)], embedding_model="m"
    ),
    "versions": lambda r, k: k.versions(),
    "set_version_embeddings": lambda r, k: k.set_version_embeddings(
        {1: b"\0" * 4}, embedding_model="m"
    ),
}


def _t(r: Repository) -> TeamRepository:
    return TeamRepository(r.db)


NOW = datetime(2024, 1, 1, tzinfo=UTC)
TEAM_CALLS: dict[str, Call] = {
    "set_role": lambda r, k: _t(r).set_role("t1", "test:u1", "agent", by="test:admin"),
    "role_of": lambda r, k: _t(r).role_of("t1", "test:u1"),
    "roles": lambda r, k: _t(r).roles("t1"),
    "audit": lambda r, k: _t(r).audit("t1", "test:admin", "mode"),
    "audit_entries": lambda r, k: _t(r).audit_entries(tenant="t1", limit=5),
    "set_quota": lambda r, k: _t(r).set_quota("t1", "", 1000, by="test:admin"),
    "quotas": lambda r, k: _t(r).quotas("t1"),
    "quota_state": lambda r, k: _t(r).quota_state("t1", "test:u1", since=NOW),
    "record_usage": lambda r, k: _t(r).record_usage(
        tenant="t1",
        user_id="test:u1",
        inbound_id=1,
        plan="chat",
        prompt_tokens=1,
        completion_tokens=1,
        model_seconds=0.1,
        seconds_source="wall",
    ),
    "first_quota_notice": lambda r, k: _t(r).first_quota_notice("t1", "test:u1", "2024-01-01"),
    "invite_rating": lambda r, k: _t(r).invite_rating(
        tenant="t1", conversation_id=1, user_id="test:u1", question="q", inbound_id=1
    ),
    "open_invitation": lambda r, k: _t(r).open_invitation(1, since=NOW),
    "rate": lambda r, k: _t(r).rate(1, 1, "fine"),
    "ratings": lambda r, k: _t(r).ratings(tenant="t1"),
    "gap_questions": lambda r, k: _t(r).gap_questions(tenant="t1"),
    "propose": lambda r, k: _t(r).propose(
        tenant="t1", question="q", answer="a", proposed_by="slack:U1"
    ),
    "proposals": lambda r, k: _t(r).proposals(tenant="t1"),
    "proposal": lambda r, k: _t(r).proposal(1),
    "decide": lambda r, k: _t(r).decide(1, approved=False, by="test:admin"),
    "stats": lambda r, k: _t(r).stats("t1"),
    "forget": lambda r, k: _t(r).forget("test:u1"),
}


def _s(r: Repository) -> SlackRepository:
    return SlackRepository(r.db, TokenCipher("q6Zx1Xh7kq2oXb6S1W9bVxJd8l3Yc0pTfU4nR5eA2mI="))


INSTALL = SlackInstallation(
    enterprise_id="",
    team_id="T1",
    user_id="U1",
    is_enterprise_install=False,
    bot_user_id="UBOT",
    bot_id="BBOT",
    installed_at=datetime.now(UTC),
    details={"team_name": MARKER},
    secrets={"bot_token": f"xoxb-{MARKER}"},
)
SLACK_CALLS: dict[str, Call] = {
    "save_installation": lambda r, k: _s(r).save_installation(INSTALL),
    "find_installation": lambda r, k: _s(r).find_installation(enterprise_id=None, team_id="T1"),
    "find_bot": lambda r, k: _s(r).find_bot(enterprise_id=None, team_id="T1"),
    "bot_for_team": lambda r, k: _s(r).bot_for_team("T1"),
    "link_team": lambda r, k: _s(r).link_team("T1", "E1"),
    "delete_bot": lambda r, k: _s(r).delete_bot(enterprise_id=None, team_id="T1"),
    "delete_installation": lambda r, k: _s(r).delete_installation(enterprise_id=None, team_id="T1"),
    "issue_state": lambda r, k: _s(r).issue_state(MARKER, datetime.now(UTC)),
    "consume_state": lambda r, k: _s(r).consume_state(MARKER),
    "uninstalled_before": lambda r, k: _s(r).uninstalled_before(datetime.now(UTC)),
    "purge_workspace": lambda r, k: _s(r).purge_workspace("T1", datetime.now(UTC)),
}
LANGUAGE_CALLS: dict[str, Call] = {
    "of_conversation": lambda r, k: LanguageRepository(r.db).of_conversation(1),
    "detected": lambda r, k: LanguageRepository(r.db).detected(1, "sv"),
    "of_tenant": lambda r, k: LanguageRepository(r.db).of_tenant("test", "t1"),
    "set_tenant": lambda r, k: LanguageRepository(r.db).set_tenant("test", "t1", "de", by="x"),
    "clear_tenant": lambda r, k: LanguageRepository(r.db).clear_tenant("test", "t1"),
}

ALL_CALLS = (
    [("Repository", n, c) for n, c in REPOSITORY_CALLS.items()]
    + [("KnowledgeRepository", n, c) for n, c in KNOWLEDGE_CALLS.items()]
    + [("HandoffRepository", n, c) for n, c in HANDOFF_CALLS.items()]
    + [("TeamRepository", n, c) for n, c in TEAM_CALLS.items()]
    + [("SlackRepository", n, c) for n, c in SLACK_CALLS.items()]
    + [("LanguageRepository", n, c) for n, c in LANGUAGE_CALLS.items()]
)


def _public_methods(cls: type) -> set[str]:
    """The public coroutine methods of ``cls``, its own and inherited."""
    return {
        name
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and inspect.iscoroutinefunction(member)
    }


def test_every_public_method_is_covered() -> None:
    # aclose only disposes of the engine; there is nothing to fail.
    assert _public_methods(Repository) - {"aclose"} == set(REPOSITORY_CALLS)
    assert _public_methods(KnowledgeRepository) == set(KNOWLEDGE_CALLS)
    assert _public_methods(HandoffRepository) == set(HANDOFF_CALLS)
    assert _public_methods(TeamRepository) == set(TEAM_CALLS)
    assert _public_methods(SlackRepository) == set(SLACK_CALLS)
    assert _public_methods(LanguageRepository) == set(LANGUAGE_CALLS)


def _assert_clean(error: StorageError, caplog: pytest.LogCaptureFixture) -> None:
    """Neither the message nor a logged traceback shows customer data."""
    logging.getLogger("deskmate.test").error("storage failed", exc_info=error)
    shown = str(error) + "\n" + "".join(traceback.format_exception(error)) + caplog.text
    assert MARKER not in shown
    assert error.__cause__ is not None


def _causes(error: BaseException) -> Iterator[BaseException]:
    current: BaseException | None = error
    while current is not None:
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__


# -- PostgreSQL ------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("owner", "name", "call"), ALL_CALLS, ids=[f"{o}.{n}" for o, n, _ in ALL_CALLS]
)
async def test_postgres_refusing_connections_is_a_storage_error(
    owner: str, name: str, call: Call
) -> None:
    # Nothing listens on the port: asyncpg's connect fails with a bare OSError.
    db = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/deskmate")
    try:
        with pytest.raises(StorageError, match=r"could not .*ConnectionRefusedError") as caught:
            await call(Repository(db), KnowledgeRepository(db))
        assert isinstance(caught.value.__cause__, OSError)
        assert "127.0.0.1" in str(caught.value)
    finally:
        await db.dispose()


@pytest.fixture
async def proxied(postgres_url: str) -> AsyncIterator[tuple[Repository, TcpProxy]]:
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    port = await proxy.start()
    repo = await _fresh_pg_repository(
        url.set(port=port, host="127.0.0.1").render_as_string(hide_password=False)
    )
    yield repo, proxy
    with contextlib.suppress(Exception):
        await proxy.shut()
    await repo.aclose()


@pytest.mark.postgres
async def test_postgres_going_away_mid_run_is_a_storage_error(
    proxied: tuple[Repository, TcpProxy],
) -> None:
    repository, proxy = proxied
    knowledge = KnowledgeRepository(repository.db)
    stored = await repository.accept(make_event("before"), kind="chat")
    await knowledge.set_setting("tenant:t1", "mode", "faq")
    await proxy.shut()
    with pytest.raises(StorageError, match="could not store an answer"):
        await repository.record_answer(stored, text="after", kind="chat")
    with pytest.raises(StorageError, match="could not mark an inbound event failed"):
        await repository.mark_failed(stored.inbound_id, "delivery failed")
    with pytest.raises(StorageError, match="could not store an inbound event"):
        await repository.accept(make_event("after"), kind="chat")
    with pytest.raises(StorageError, match="could not read the mode setting"):
        await knowledge.get_setting("tenant:t1", "mode")


@pytest.mark.postgres
async def test_postgres_errors_hide_the_values(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    repository = await _fresh_pg_repository(postgres_url)
    # user_name is VARCHAR(160): the insert fails inside the server.
    event = dataclasses.replace(make_event(f"question {MARKER}"), user_name=MARKER * 20)
    try:
        with pytest.raises(StorageError, match="could not store an inbound event") as caught:
            await repository.accept(event, kind="chat")
    finally:
        await repository.aclose()
    _assert_clean(caught.value, caplog)


async def test_failing_insert_shows_no_values(
    repository: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    # A unique violation: PostgreSQL's DETAIL would quote the duplicate key,
    # and both drivers' errors used to carry the bound parameters.
    row = {"platform_user": f"test:{MARKER}", "name": MARKER, "created_at": datetime.now(UTC)}

    def insert_twice(conn: Connection) -> None:
        conn.execute(users.insert(), [row, row])

    with pytest.raises(StorageError, match="could not store users") as caught:
        await repository.db.run(insert_twice, what="store users")
    _assert_clean(caught.value, caplog)


# -- SQLite ------------------------------------------------------------------------


@pytest.fixture
async def sqlite_file(tmp_path: Path) -> AsyncIterator[tuple[Repository, Path]]:
    path = tmp_path / "deskmate.db"
    db = Database(f"sqlite:///{path}")
    await db.upgrade()
    repo = Repository(db)
    yield repo, path
    await repo.aclose()


async def _short_busy_timeout(repository: Repository) -> None:
    # The worker keeps its connection, so the setting sticks; waiting 30 s
    # for the lock would only slow the test down.
    await repository.db.run(lambda conn: conn.exec_driver_sql("PRAGMA busy_timeout = 50"))


LOCKED_WRITES: dict[str, Callable[[Repository, StoredInbound], Awaitable[object]]] = {
    # The conversation is cached, so this goes straight to the sqlite3 fast path.
    "accept": lambda r, s: r.accept(make_event("while locked"), kind="chat"),
    "record_answer": lambda r, s: r.record_answer(s, text="hello", kind="chat"),
    "mark_failed": lambda r, s: r.mark_failed(s.inbound_id, "LLM failed"),
    "pending": lambda r, s: Repository(r.db).pending("test"),
    "reset_conversation": lambda r, s: r.reset_conversation(s.conversation_id),
    "set_active": lambda r, s: r.set_active(HERE, False),
    "move_conversation": lambda r, s: r.move_conversation(HERE, THERE),
    "forget_user": lambda r, s: r.forget_user("test:u1"),
    "set_role": lambda r, s: TeamRepository(r.db).set_role(
        "t1", "test:u1", "agent", by="test:admin"
    ),
}


@pytest.mark.parametrize("name", list(LOCKED_WRITES))
async def test_sqlite_held_lock_is_a_storage_error(
    sqlite_file: tuple[Repository, Path], name: str
) -> None:
    repository, path = sqlite_file
    stored = await repository.accept(make_event("before"), kind="chat")
    repository.retry_delays = (0.0,)
    await repository.mark_failed(stored.inbound_id, "LLM failed")  # something to recover, now
    await _short_busy_timeout(repository)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StorageError, match="database is locked") as caught:
            await LOCKED_WRITES[name](repository, stored)
        assert any(isinstance(c, sqlite3.OperationalError) for c in _causes(caught.value))
    finally:
        holder.rollback()
        holder.close()
    # Once the lock is gone the same connection works again.
    await repository.record_answer(stored, text="after the lock", kind="chat")


async def test_sqlite_locked_knowledge_write_shows_no_values(
    sqlite_file: tuple[Repository, Path], caplog: pytest.LogCaptureFixture
) -> None:
    repository, path = sqlite_file
    knowledge = KnowledgeRepository(repository.db)
    await _short_busy_timeout(repository)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StorageError, match="database is locked") as caught:
            await knowledge.record_answer(
                tenant="t1",
                conversation_key="test:t1:c1:",
                question=f"my card is {MARKER}",
                path="model",
                entries=[],
                answer="noted",
            )
    finally:
        holder.rollback()
        holder.close()
    _assert_clean(caught.value, caplog)


async def test_sqlite_full_database_is_a_storage_error(
    sqlite_file: tuple[Repository, Path],
) -> None:
    repository, _path = sqlite_file
    stored = await repository.accept(make_event("before"), kind="chat")

    def cap(conn: Connection) -> None:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
        conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")

    await repository.db.run(cap)
    with pytest.raises(StorageError, match="database or disk is full") as caught:
        await repository.record_answer(stored, text="x" * 200_000, kind="chat")
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
