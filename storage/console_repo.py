"""What the operator console reads and writes: sign-in links, personal tokens,
sessions, the roles of the person signed in, and the reports over
conversations, answers, tickets, ratings and escalations.

Sign-in links, personal tokens and session cookies are stored as SHA-256
hashes only. A link, a token and a session each belong to one person (a
platform user id, as ``Inbound.platform_user``); "" is the owner's fallback
(the shared ``DESKMATE_CONSOLE_TOKEN`` or a link printed without ``--user``). The
overview's figures per day are read by ``storage.console_overview``. Every
public method is one transaction.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, exists, func, or_, select, update

from storage.addresses import ConversationAddress
from storage.console_outcomes import Outcomes, read_outcomes
from storage.console_overview import Overview, read_overview
from storage.db import as_utc, utcnow
from storage.knowledge_repo import FaqEntry, entry_from_row
from storage.models import (
    console_links,
    console_sessions,
    console_tokens,
    conversations,
    documents,
    escalations,
    faq_answers,
    faq_entries,
    inbound_events,
    messages,
    ratings,
    team_roles,
    tickets,
)
from storage.sql import ADDRESS_COLUMNS, Store, address_of, select_address


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in browser: ``platform_user`` is the person ("" for the owner's
    fallback), ``via`` how they signed in (token, personal, link)."""

    csrf: str
    via: str
    expires_at: datetime
    platform_user: str = ""


@dataclass(frozen=True, slots=True)
class ConversationRow:
    id: int
    address: ConversationAddress
    messages: int
    last_at: datetime | None
    users: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TranscriptMessage:
    id: int
    role: str
    kind: str
    user_id: str
    reply_to: int | None
    text: str
    latency_ms: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LoggedAnswer:
    id: int
    question: str
    path: str
    entries: list[dict[str, Any]]
    answer: str
    created_at: datetime


@dataclass(slots=True)
class Transcript:
    id: int
    address: ConversationAddress
    messages: list[TranscriptMessage]
    answers: list[LoggedAnswer]
    # Entries the logged answers name, by row id (absent: removed since).
    entries: dict[int, FaqEntry]
    names: dict[str, str]
    ticket_ids: list[int]


@dataclass(frozen=True, slots=True)
class EscalatedQuestion:
    id: int
    tenant: str
    question: str
    reason: str
    status: str
    conversation_key: str
    created_at: datetime
    why: str = "escalated"  # escalated | rated bad


class ConsoleRepository(Store):
    # -- sign-in ---------------------------------------------------------------------

    async def create_link(
        self, token: str, *, valid_for: timedelta, platform_user: str = ""
    ) -> datetime:
        """Store a one-time sign-in link (its hash) for ``platform_user``; returns
        when it expires."""
        now = utcnow()
        expires = now + valid_for

        def op(conn: Connection) -> None:
            # Expired links are useless; drop them so the table stays small.
            conn.execute(delete(console_links).where(console_links.c.expires_at < now))
            conn.execute(
                console_links.insert().values(
                    token_hash=token_hash(token),
                    created_at=now,
                    expires_at=expires,
                    platform_user=platform_user,
                )
            )

        await self._run("store a console sign-in link", op)
        return expires

    async def spend_link(self, token: str) -> str | None:
        """Spend a sign-in link: the person it signs in ("" for the owner's
        fallback) once, for an unexpired link; None ever after."""
        now = utcnow()
        where = and_(
            console_links.c.token_hash == token_hash(token),
            console_links.c.used_at.is_(None),
            console_links.c.expires_at > now,
        )

        def op(conn: Connection) -> str | None:
            person = conn.execute(select(console_links.c.platform_user).where(where)).scalar()
            if person is None:
                return None
            # The update decides: of two uses at once, only one changes the row.
            spent = conn.execute(update(console_links).where(where).values(used_at=now)).rowcount
            return str(person) if spent == 1 else None

        return await self._run("use a console sign-in link", op)

    async def use_link(self, token: str) -> bool:
        """Spend a sign-in link: True once, for an unexpired link; False ever after."""
        return await self.spend_link(token) is not None

    async def issue_token(self, token: str, *, platform_user: str) -> None:
        """Make ``token`` the person's personal sign-in token, replacing any earlier one."""
        now = utcnow()

        def op(conn: Connection) -> None:
            conn.execute(
                delete(console_tokens).where(console_tokens.c.platform_user == platform_user)
            )
            conn.execute(
                console_tokens.insert().values(
                    platform_user=platform_user, token_hash=token_hash(token), created_at=now
                )
            )

        await self._run("store a personal console token", op)

    async def token_owner(self, token: str) -> str | None:
        """The person whose personal token ``token`` is; None for no such token."""
        query = select(console_tokens.c.platform_user).where(
            console_tokens.c.token_hash == token_hash(token)
        )
        return await self._run(
            "read a personal console token", lambda conn: conn.execute(query).scalar()
        )

    async def revoke(self, platform_user: str) -> tuple[int, int]:
        """Remove the person's personal token and end every console session of
        theirs; returns how many tokens and sessions went."""

        def op(conn: Connection) -> tuple[int, int]:
            tokens = conn.execute(
                delete(console_tokens).where(console_tokens.c.platform_user == platform_user)
            ).rowcount
            sessions = conn.execute(
                delete(console_sessions).where(console_sessions.c.platform_user == platform_user)
            ).rowcount
            return int(tokens or 0), int(sessions or 0)

        return await self._run("revoke a person's console sign-in", op)

    async def roles_of(self, platform_user: str) -> dict[str, str]:
        """The person's role (agent or admin) per tenant they have one in."""
        query = select(team_roles.c.tenant, team_roles.c.role).where(
            team_roles.c.platform_user == platform_user
        )
        return await self._run(
            "read a person's roles",
            lambda conn: {str(t): str(r) for t, r in conn.execute(query)},
        )

    async def tenants_of_user(self, platform_user: str) -> set[str]:
        """The tenants of the conversations ``platform_user`` wrote in."""
        query = (
            select(conversations.c.tenant)
            .select_from(
                inbound_events.join(
                    conversations, conversations.c.id == inbound_events.c.conversation_id
                )
            )
            .where(inbound_events.c.user_id == platform_user)
            .distinct()
        )
        return await self._run(
            "read a person's tenants", lambda conn: set(conn.execute(query).scalars())
        )

    async def display_name(self, platform_user: str) -> str:
        """The name the person last wrote under (their id when none is known)."""
        query = (
            select(inbound_events.c.user_name)
            .where(inbound_events.c.user_id == platform_user, inbound_events.c.user_name != "")
            .order_by(inbound_events.c.id.desc())
            .limit(1)
        )
        found = await self._run("read a person's name", lambda conn: conn.execute(query).scalar())
        return str(found or platform_user)

    async def create_session(
        self, token: str, *, csrf: str, via: str, valid_for: timedelta, platform_user: str = ""
    ) -> None:
        now = utcnow()

        def op(conn: Connection) -> None:
            conn.execute(delete(console_sessions).where(console_sessions.c.expires_at < now))
            conn.execute(
                console_sessions.insert().values(
                    token_hash=token_hash(token),
                    csrf=csrf,
                    via=via,
                    created_at=now,
                    expires_at=now + valid_for,
                    platform_user=platform_user,
                )
            )

        await self._run("start a console session", op)

    async def session(self, token: str) -> ConsoleSession | None:
        query = select(
            console_sessions.c.csrf,
            console_sessions.c.via,
            console_sessions.c.expires_at,
            console_sessions.c.platform_user,
        ).where(console_sessions.c.token_hash == token_hash(token))
        row = await self._run("read a session", lambda conn: conn.execute(query).first())
        if row is None:
            return None
        expires = as_utc(row.expires_at) or row.expires_at
        if expires <= utcnow():
            return None
        return ConsoleSession(row.csrf, row.via, expires, row.platform_user or "")

    async def end_session(self, token: str) -> None:
        statement = delete(console_sessions).where(
            console_sessions.c.token_hash == token_hash(token)
        )
        await self._run("end a session", lambda conn: conn.execute(statement))

    # -- reports ---------------------------------------------------------------------

    async def tenants(self) -> list[str]:
        def op(conn: Connection) -> list[str]:
            found = set(conn.execute(select(conversations.c.tenant).distinct()).scalars())
            found |= set(conn.execute(select(faq_entries.c.tenant).distinct()).scalars())
            found |= set(conn.execute(select(documents.c.tenant).distinct()).scalars())
            return sorted(t for t in found if t)[:500]

        return await self._run("list tenants", op)

    async def overview(self, since: date, until: date, *, tenant: str | None = None) -> Overview:
        """Figures for the UTC days ``since`` to ``until`` inclusive."""
        return await self._run(
            "read the console overview",
            lambda conn: read_overview(conn, since, until, tenant=tenant, dialect=self.dialect),
        )

    async def outcomes(
        self, since: date, until: date, *, tenant: str | None = None, idle: float
    ) -> Outcomes:
        """Cases, handoffs, the bot's share, ratings by answer path and suggestion
        acceptance for the UTC days ``since`` to ``until`` (``idle``: seconds of
        silence that end a case); see ``storage.console_outcomes``."""
        return await self._run(
            "read the outcomes",
            lambda conn: read_outcomes(
                conn, since, until, tenant=tenant, dialect=self.dialect, idle=idle
            ),
        )

    async def find_conversations(
        self,
        *,
        text: str = "",
        platform: str = "",
        user: str = "",
        since: date | None = None,
        until: date | None = None,
        tenant: str | None = None,
        limit: int = 50,
    ) -> list[ConversationRow]:
        """Conversations with a message matching every filter given, latest first."""
        # Its own alias: the outer query joins messages too, for the counts.
        m = messages.alias("m")
        conditions: list[Any] = [m.c.conversation_id == conversations.c.id]
        if text:
            pattern = f"%{_escape_like(text.lower())}%"
            conditions.append(func.lower(m.c.text).like(pattern, escape="\\"))
        if user:
            pattern = f"%{_escape_like(user.lower())}%"
            conditions.append(func.lower(m.c.user_id).like(pattern, escape="\\"))
        if since is not None:
            conditions.append(
                m.c.created_at >= datetime(since.year, since.month, since.day, tzinfo=UTC)
            )
        if until is not None:
            end = datetime(until.year, until.month, until.day, tzinfo=UTC) + timedelta(days=1)
            conditions.append(m.c.created_at < end)
        filters: list[Any] = [exists().where(and_(*conditions))]
        if platform:
            filters.append(conversations.c.platform == platform)
        if tenant is not None:
            filters.append(conversations.c.tenant == tenant)
        last = func.max(messages.c.created_at)
        query = (
            select(
                conversations.c.id,
                *ADDRESS_COLUMNS,
                func.count(messages.c.id),
                last,
            )
            .select_from(conversations.outerjoin(messages))
            .where(*filters)
            .group_by(conversations.c.id, *ADDRESS_COLUMNS)
            .order_by(last.desc(), conversations.c.id.desc())
            .limit(limit)
        )

        def op(conn: Connection) -> list[ConversationRow]:
            rows = conn.execute(query).all()
            users: dict[int, list[str]] = defaultdict(list)
            if rows:
                for cid, uid in conn.execute(
                    select(inbound_events.c.conversation_id, inbound_events.c.user_id)
                    .where(
                        inbound_events.c.conversation_id.in_([r[0] for r in rows]),
                        inbound_events.c.user_id != "",
                    )
                    .distinct()
                ):
                    if len(users[cid]) < 5:
                        users[cid].append(uid)
            return [
                ConversationRow(
                    id=r[0],
                    address=ConversationAddress(r[1], r[2], r[3], r[4]),
                    messages=int(r[5]),
                    last_at=as_utc(r[6]) if isinstance(r[6], datetime) else None,
                    users=tuple(sorted(users[r[0]])),
                )
                for r in rows
            ]

        return await self._run("search conversations", op)

    async def transcript(self, conversation_id: int) -> Transcript | None:
        def op(conn: Connection) -> Transcript | None:
            row = conn.execute(select_address(conversation_id)).first()
            if row is None:
                return None
            address = address_of(row)
            said = [
                TranscriptMessage(
                    id=m.id,
                    role=m.role,
                    kind=m.kind,
                    user_id=m.user_id or "",
                    reply_to=m.reply_to,
                    text=m.text,
                    latency_ms=m.latency_ms,
                    prompt_tokens=m.prompt_tokens,
                    completion_tokens=m.completion_tokens,
                    created_at=as_utc(m.created_at) or m.created_at,
                )
                for m in conn.execute(
                    select(messages)
                    .where(messages.c.conversation_id == conversation_id)
                    .order_by(func.coalesce(messages.c.reply_to, messages.c.id), messages.c.id)
                )
            ]
            answers = [
                LoggedAnswer(
                    id=a.id,
                    question=a.question,
                    path=a.path,
                    entries=list(a.entries or []),
                    answer=a.answer,
                    created_at=as_utc(a.created_at) or a.created_at,
                )
                for a in conn.execute(
                    select(faq_answers)
                    .where(faq_answers.c.conversation_key == address.key)
                    .order_by(faq_answers.c.id)
                )
            ]
            ids = sorted({int(e["id"]) for a in answers for e in a.entries if "id" in e})
            entries: dict[int, FaqEntry] = {}
            if ids:
                for e in conn.execute(
                    select(*[c for c in faq_entries.c if c.name != "embedding"]).where(
                        faq_entries.c.id.in_(ids[:500])
                    )
                ):
                    entries[e.id] = entry_from_row(e)
            names = {
                uid: name
                for uid, name in conn.execute(
                    select(inbound_events.c.user_id, inbound_events.c.user_name)
                    .where(
                        inbound_events.c.conversation_id == conversation_id,
                        inbound_events.c.user_name != "",
                    )
                    .distinct()
                )
            }
            ticket_ids = list(
                conn.execute(
                    select(tickets.c.id)
                    .where(tickets.c.conversation_id == conversation_id)
                    .order_by(tickets.c.id)
                ).scalars()
            )
            return Transcript(conversation_id, address, said, answers, entries, names, ticket_ids)

        return await self._run("read a transcript", op)

    async def ticket_ids(
        self, *, states: Sequence[str], tenant: str | None = None, limit: int = 200
    ) -> list[int]:
        """Tickets in ``states``, oldest activity first for open ones."""
        query = (
            select(tickets.c.id)
            .select_from(tickets.join(conversations))
            .where(tickets.c.state.in_(list(states)))
            .order_by(tickets.c.created_at.desc() if "closed" in states else tickets.c.id)
            .limit(limit)
        )
        if tenant is not None:
            query = query.where(conversations.c.tenant == tenant)
        return await self._run("list tickets", lambda conn: list(conn.execute(query).scalars()))

    async def escalated(
        self, *, since: date, tenant: str | None = None, limit: int = 5000
    ) -> list[EscalatedQuestion]:
        start = datetime(since.year, since.month, since.day, tzinfo=UTC)
        query = (
            select(escalations)
            .where(escalations.c.created_at >= start)
            .order_by(escalations.c.id.desc())
            .limit(limit)
        )
        if tenant is not None:
            query = query.where(escalations.c.tenant == tenant)

        def op(conn: Connection) -> list[EscalatedQuestion]:
            return [
                EscalatedQuestion(
                    id=r.id,
                    tenant=r.tenant,
                    question=r.question,
                    reason=r.reason,
                    status=r.status,
                    conversation_key=r.conversation_key,
                    created_at=as_utc(r.created_at) or r.created_at,
                )
                for r in conn.execute(query)
            ]

        return await self._run("read escalated questions", op)

    async def gap_questions(
        self, *, since: date, tenant: str | None = None, limit: int = 5000
    ) -> list[EscalatedQuestion]:
        """Escalated questions and the questions of answers rated 👎 since ``since``
        (the same pair as ``/faq gaps``), newest first."""
        start = datetime(since.year, since.month, since.day, tzinfo=UTC)
        query = (
            select(ratings)
            .where(ratings.c.score < 0, ratings.c.question != "", ratings.c.rated_at >= start)
            .order_by(ratings.c.id.desc())
            .limit(limit)
        )
        if tenant is not None:
            query = query.where(ratings.c.tenant == tenant)

        def op(conn: Connection) -> list[EscalatedQuestion]:
            return [
                EscalatedQuestion(
                    id=r.id,
                    tenant=r.tenant,
                    question=r.question,
                    reason=r.comment,
                    status="",
                    conversation_key="",
                    created_at=as_utc(r.rated_at) or r.rated_at,
                    why="rated bad",
                )
                for r in conn.execute(query)
            ]

        bad = await self._run("read badly rated questions", op)
        found = await self.escalated(since=since, tenant=tenant, limit=limit) + bad
        return sorted(found, key=lambda q: q.created_at, reverse=True)

    async def find_entries(
        self, *, text: str = "", tenant: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[FaqEntry]:
        """Entries whose question, phrasings, answer or source contain ``text``."""
        query = (
            select(*[c for c in faq_entries.c if c.name != "embedding"])
            .order_by(faq_entries.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        if text:
            pattern = f"%{_escape_like(text.lower())}%"
            query = query.where(
                or_(
                    func.lower(faq_entries.c.search_text).like(pattern, escape="\\"),
                    func.lower(faq_entries.c.answer).like(pattern, escape="\\"),
                    func.lower(faq_entries.c.source).like(pattern, escape="\\"),
                )
            )
        if tenant is not None:
            query = query.where(faq_entries.c.tenant == tenant)
        return await self._run(
            "search FAQ entries", lambda conn: [entry_from_row(r) for r in conn.execute(query)]
        )

    async def entry(self, entry_id: int) -> FaqEntry | None:
        query = select(*[c for c in faq_entries.c if c.name != "embedding"]).where(
            faq_entries.c.id == entry_id
        )

        def op(conn: Connection) -> FaqEntry | None:
            row = conn.execute(query).first()
            return entry_from_row(row) if row is not None else None

        return await self._run("read an FAQ entry", op)
