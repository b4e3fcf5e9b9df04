"""Conversations and what was said in them: the history a prompt is built
from, ``/reset``, re-homing a conversation, forgetting a person, usage figures.

Conversation rows are created by the first inbound event of a chat (see
``storage.inbox_repo``) and deleted only with a whole Slack workspace
(``storage.slack_repo``'s purge).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import ColumnElement, Connection, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from storage.addresses import ConversationAddress
from storage.db import Database
from storage.forget_quotes import scrub_quotes
from storage.knowledge_repo import KnowledgeForgotten, forget_knowledge
from storage.models import conversations, inbound_events, messages, users
from storage.sql import ADDRESS_COLUMNS, Store, address_of, at_address, nearest_rank, select_address
from storage.statements import Statements
from storage.web_repo import forget_web_messages


@dataclass(frozen=True, slots=True)
class HistoryItem:
    role: str
    text: str
    # The platform user id of who wrote it ("" for answers and older rows).
    author: str = ""


@dataclass(frozen=True, slots=True)
class Stats:
    conversations: int
    messages: int
    prompt_tokens: int
    completion_tokens: int
    answers: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    failed: int


@dataclass(frozen=True, slots=True)
class ForgetResult:
    """What ``forget_user`` removed: rows deleted, or (events) emptied."""

    messages: int
    events: int
    faq_answers: int = 0
    escalations: int = 0
    drafts: int = 0


class ConversationRepository(Store):
    """Conversations, their messages, and the people who wrote them.

    Every public coroutine but ``aclose`` is one transaction.
    """

    def __init__(self, db: Database, *, max_attempts: int = 3, cache_size: int = 50_000) -> None:
        super().__init__(db)
        # A forgotten person's unanswered events are settled as out of attempts.
        self.max_attempts = max_attempts
        # Conversation ids never change, but a row is deleted by the purge of
        # a Slack workspace that uninstalled the app, in this process or in
        # another one, and the workspace may come back: a cached id is checked
        # inside the transaction that uses it (see ``_conversation_id``).
        # Bounded so that a long-lived process does not grow with every chat.
        self._conversation_ids: _Lru[tuple[str, str, str, str], int] = _Lru(cache_size)
        self._known_users: _Lru[str, bool] = _Lru(cache_size)
        self._sql = Statements(db.dialect_impl, self._insert)

    async def aclose(self) -> None:
        await self.db.dispose()

    # -- conversations -------------------------------------------------------------

    def _conversation_id(self, conn: Connection, ref: ConversationAddress, now: datetime) -> int:
        cached = self._conversation_ids.get(_cache_key(ref))
        if cached is not None:
            if self._still_there(conn, cached, ref):
                return cached
            # Purged since it was cached (maybe by another worker): what this
            # process remembers of the tenant is stale too.
            self.drop_tenant(ref.platform, ref.tenant)
        conn.execute(
            self._insert(conversations)
            .values(
                platform=ref.platform,
                tenant=ref.tenant,
                chat=ref.chat,
                thread=ref.thread,
                active=True,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["platform", "tenant", "chat", "thread"])
        )
        conversation_id = self._find_conversation(conn, ref)
        assert conversation_id is not None
        return conversation_id

    def _still_there(
        self, conn: Connection, conversation_id: int, ref: ConversationAddress
    ) -> bool:
        """Whether the cached id is still the conversation at ``ref``: a purge
        deletes rows, and SQLite may hand a deleted row's id to a new one. On
        PostgreSQL the row is locked, so a purge running now cannot delete it
        before this transaction ends (the claims lock it anyway)."""
        params = {
            "id": conversation_id,
            "platform": ref.platform,
            "tenant": ref.tenant,
            "chat": ref.chat,
            "thread": ref.thread,
        }
        return bool(self._sql.rows(conn, self._sql.conversation_at, params))

    def drop_tenant(self, platform: str, tenant: str) -> None:
        """Forget what this process cached about a tenant's conversations and
        people (after the tenant's data was purged)."""
        for key in [k for k in self._conversation_ids if k[0] == platform and k[1] == tenant]:
            del self._conversation_ids[key]
        prefix = f"{platform}:{tenant}/"
        for user in [u for u in self._known_users if u.startswith(prefix)]:
            del self._known_users[user]

    def _remember(self, ref: ConversationAddress, conversation_id: int) -> None:
        """Cache a committed conversation id (a rolled-back insert must not be)."""
        self._conversation_ids[_cache_key(ref)] = conversation_id

    def _find_conversation(self, conn: Connection, ref: ConversationAddress) -> int | None:
        return conn.execute(select(conversations.c.id).where(at_address(ref))).scalar()

    async def conversation(self, conversation_id: int) -> ConversationAddress | None:
        def op(conn: Connection) -> ConversationAddress | None:
            row = conn.execute(select_address(conversation_id)).first()
            return address_of(row) if row is not None else None

        return await self._run("read a conversation", op)

    async def last_customer(self, conversation_id: int) -> tuple[str, str]:
        """The user id and name of the conversation's latest message from a person."""

        def op(conn: Connection) -> tuple[str, str]:
            row = conn.execute(
                select(inbound_events.c.user_id, inbound_events.c.user_name)
                .where(inbound_events.c.conversation_id == conversation_id)
                .order_by(inbound_events.c.id.desc())
                .limit(1)
            ).first()
            return (row.user_id, row.user_name) if row is not None else ("", "")

        return await self._run("read a conversation's customer", op)

    async def last_customer_text(self, conversation_id: int) -> str:
        """The text of the conversation's latest message from a person that is
        not a command ("" when there is none)."""

        def op(conn: Connection) -> str:
            rows = conn.execute(
                select(inbound_events.c.text)
                .where(inbound_events.c.conversation_id == conversation_id)
                .where(inbound_events.c.text != "")
                .order_by(inbound_events.c.id.desc())
                .limit(20)
            ).scalars()
            return next((text for text in rows if not text.lstrip().startswith("/")), "")

        return await self._run("read a conversation's last message", op)

    # -- history -------------------------------------------------------------------

    async def history(
        self, conversation_id: int, *, upto_message_id: int | None, limit: int
    ) -> list[HistoryItem]:
        """The newest ``limit`` chat messages up to and including the given one,
        oldest first, each answer right after its question."""
        return await self._run(
            "read the conversation history",
            lambda conn: self._history(conn, conversation_id, upto_message_id, limit),
        )

    def _history(
        self, conn: Connection, conversation_id: int, upto_message_id: int | None, limit: int
    ) -> list[HistoryItem]:
        query = self._sql.history if upto_message_id is not None else self._sql.history_all
        params = {"conversation_id": conversation_id, "upto": upto_message_id, "limit": limit}
        rows = self._sql.rows(conn, query, params)
        return [HistoryItem(role, text, author or "") for role, text, author in reversed(rows)]

    # -- a conversation's state and place -----------------------------------------

    async def reset_conversation(
        self, conversation_id: int, *, upto_inbound: int | None = None, author: str | None = None
    ) -> int:
        """Forget a conversation's history; returns how many messages went.

        ``upto_inbound``: only what was stored up to that inbound event (the
        ``/reset`` itself) goes, with the answers to it; a message that
        arrived after it stays, however early it was stored. ``author``: only
        that person's messages and the answers to them go (one member of a
        group), not what the others said.
        """

        def op(conn: Connection) -> int:
            doomed: ColumnElement[bool] = messages.c.conversation_id == conversation_id
            if upto_inbound is not None:
                bound = _message_bound(conn, conversation_id=conversation_id, upto=upto_inbound)
                if bound is None:
                    return 0
                doomed = and_(doomed, func.coalesce(messages.c.reply_to, messages.c.id) <= bound)
            if author is not None:
                theirs = select(messages.c.id).where(
                    messages.c.conversation_id == conversation_id, messages.c.user_id == author
                )
                doomed = and_(
                    doomed,
                    or_(
                        messages.c.user_id == author,
                        messages.c.reply_to.in_(theirs.scalar_subquery()),
                    ),
                )
            result = conn.execute(delete(messages).where(doomed))
            return result.rowcount or 0

        return await self._run("reset the conversation", op)

    async def set_active(self, ref: ConversationAddress, active: bool) -> None:
        def op(conn: Connection) -> None:
            conn.execute(update(conversations).where(at_address(ref)).values(active=active))

        await self._run("update the conversation", op)

    async def is_active(self, ref: ConversationAddress) -> bool:
        query = select(conversations.c.active).where(at_address(ref))
        row = await self._run("read the conversation", lambda conn: conn.execute(query).scalar())
        return True if row is None else bool(row)

    async def move_conversation(self, old: ConversationAddress, new: ConversationAddress) -> None:
        """Re-home a conversation (e.g. a Telegram group upgraded to a supergroup).

        If the new place already has a conversation, the old one's messages and
        events are merged into it.
        """

        def op(conn: Connection) -> None:
            old_id = self._find_conversation(conn, old)
            if old_id is None:
                return
            new_id = self._find_conversation(conn, new)
            if new_id is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            update(conversations)
                            .where(conversations.c.id == old_id)
                            .values(chat=new.chat, thread=new.thread)
                        )
                except IntegrityError:
                    new_id = self._find_conversation(conn, new)
            if new_id is not None:
                for table in (messages, inbound_events):
                    conn.execute(
                        update(table)
                        .where(table.c.conversation_id == old_id)
                        .values(conversation_id=new_id)
                    )

        await self._run("move the conversation", op)
        self._conversation_ids.pop(_cache_key(old), None)
        self._conversation_ids.pop(_cache_key(new), None)

    # -- users ---------------------------------------------------------------------

    async def forget_user(
        self, platform_user: str, *, upto_inbound: int | None = None
    ) -> ForgetResult:
        """Delete everything stored about a person, in one transaction.

        Goes: what they said and the answers to it, the knowledge base's
        answer log and escalations for their questions, open drafts in
        conversations only they wrote in, and their profile. Their inbound
        event rows stay, emptied of text, names, ids and adapter data, so a
        late redelivery of one of their events is still recognised and not
        answered again.

        ``upto_inbound``: only what they sent up to that inbound event (the
        ``/forget`` itself) goes; messages that arrived after it, stored
        already but not yet answered, stay and are answered as usual, and so
        does the profile they keep alive.
        """

        def op(conn: Connection) -> ForgetResult:
            theirs: ColumnElement[bool] = inbound_events.c.user_id == platform_user
            if upto_inbound is not None:
                theirs = and_(theirs, inbound_events.c.id <= upto_inbound)
            # Read before the events are emptied: afterwards nothing ties them
            # to this person.
            questions, own = _asked(conn, platform_user, theirs)
            _forget_languages(conn, theirs)
            scrub_quotes(conn, platform_user)
            # Agents' relays waiting for a web visitor quote what they asked.
            forget_web_messages(conn, platform_user)
            knowledge = forget_knowledge(
                conn, platform_user, questions=questions, own_conversations=own
            )
            said_by: ColumnElement[bool] = messages.c.user_id == platform_user
            if upto_inbound is not None:
                sent = select(inbound_events.c.message_id).where(theirs)
                said_by = and_(said_by, messages.c.id.in_(sent.scalar_subquery()))
            said = select(messages.c.id).where(said_by)
            answers = conn.execute(
                delete(messages).where(messages.c.reply_to.in_(said.scalar_subquery()))
            )
            messages_said = conn.execute(delete(messages).where(said_by))
            # An emptied event has nothing left to answer: recovery and
            # redeliveries must leave the unanswered ones alone.
            conn.execute(
                update(inbound_events)
                .where(theirs, inbound_events.c.status != "answered")
                .values(
                    status="failed",
                    attempts=self.max_attempts,
                    error="forgotten",
                    retry_at=None,
                    claimed_by=None,
                )
            )
            events = conn.execute(
                update(inbound_events)
                .where(theirs)
                .values(user_id="", user_name="", text="", meta={})
            )
            later = conn.execute(
                select(inbound_events.c.id)
                .where(inbound_events.c.user_id == platform_user)
                .limit(1)
            ).first()
            if later is None:
                conn.execute(delete(users).where(users.c.platform_user == platform_user))
            return _forgotten(answers.rowcount, messages_said.rowcount, events.rowcount, knowledge)

        result = await self._run("forget a user", op)
        self._known_users.pop(platform_user, None)
        return result

    # -- reporting -------------------------------------------------------------------

    async def stats(self) -> Stats:
        def op(conn: Connection) -> Stats:
            n_conv = (conn.execute(select(func.count()).select_from(conversations))).scalar()
            totals = (
                conn.execute(
                    select(
                        func.count(),
                        func.coalesce(func.sum(messages.c.prompt_tokens), 0),
                        func.coalesce(func.sum(messages.c.completion_tokens), 0),
                    )
                )
            ).one()
            latencies = (
                conn.execute(
                    select(messages.c.latency_ms)
                    .where(messages.c.role == "assistant", messages.c.latency_ms.is_not(None))
                    .order_by(messages.c.id.desc())
                    .limit(10_000)
                )
            ).scalars()
            answers = sorted(latencies)
            failed = (
                conn.execute(
                    select(func.count())
                    .select_from(inbound_events)
                    .where(inbound_events.c.status == "failed")
                )
            ).scalar()
            return Stats(
                conversations=int(n_conv or 0),
                messages=int(totals[0]),
                prompt_tokens=int(totals[1]),
                completion_tokens=int(totals[2]),
                answers=len(answers),
                latency_p50_ms=nearest_rank(answers, 50),
                latency_p95_ms=nearest_rank(answers, 95),
                failed=int(failed or 0),
            )

        return await self._run("read usage figures", op)


def _forgotten(
    answers: int | None, said: int | None, events: int | None, knowledge: KnowledgeForgotten
) -> ForgetResult:
    return ForgetResult(
        messages=(answers or 0) + (said or 0),
        events=events or 0,
        faq_answers=knowledge.answers,
        escalations=knowledge.escalations,
        drafts=knowledge.drafts,
    )


def _forget_languages(conn: Connection, theirs: ColumnElement[bool]) -> None:
    """The language detected in what they wrote goes with it (in a group
    too: the next message there detects it again)."""
    wrote = select(inbound_events.c.conversation_id).where(theirs).scalar_subquery()
    conn.execute(update(conversations).where(conversations.c.id.in_(wrote)).values(language=None))


def _asked(
    conn: Connection, platform_user: str, theirs: ColumnElement[bool]
) -> tuple[dict[str, set[str]], list[str]]:
    """What ``platform_user`` asked in the events ``theirs`` selects, by
    conversation key, and the keys of the conversations only they wrote in."""
    asked = conn.execute(
        select(conversations.c.id, *ADDRESS_COLUMNS, inbound_events.c.text)
        .join(conversations, conversations.c.id == inbound_events.c.conversation_id)
        .where(theirs)
    ).all()
    keys: dict[int, str] = {}
    questions: dict[str, set[str]] = {}
    for row in asked:
        key = address_of(row).key
        keys[row.id] = key
        if row.text:
            questions.setdefault(key, set()).add(row.text)
    # A conversation someone else wrote in (a group) is not theirs to
    # erase; rows emptied by an earlier /forget name nobody.
    shared = set(
        conn.execute(
            select(inbound_events.c.conversation_id)
            .where(
                inbound_events.c.conversation_id.in_(list(keys)),
                inbound_events.c.user_id.not_in([platform_user, ""]),
            )
            .distinct()
        ).scalars()
    )
    own = [key for conversation_id, key in keys.items() if conversation_id not in shared]
    return questions, own


def _message_bound(conn: Connection, *, conversation_id: int, upto: int) -> int | None:
    """The newest message of the conversation stored with an inbound event up
    to ``upto``; None when there is none."""
    return conn.execute(
        select(func.max(inbound_events.c.message_id)).where(
            inbound_events.c.conversation_id == conversation_id, inbound_events.c.id <= upto
        )
    ).scalar()


def _cache_key(ref: ConversationAddress) -> tuple[str, str, str, str]:
    return (ref.platform, ref.tenant, ref.chat, ref.thread)


K = TypeVar("K")
V = TypeVar("V")


class _Lru(OrderedDict[K, V]):
    """A dict that keeps the ``capacity`` most recently used keys."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def get(self, key: K, default: V | None = None) -> V | None:  # type: ignore[override]
        if key not in self:
            return default
        self.move_to_end(key)
        return self[key]

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)
