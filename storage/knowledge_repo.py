"""Storage for the knowledge base: FAQ entries and their keyword index, the
answer log, escalations and per-scope settings (mode, persona).

Keyword search runs in the database: SQLite FTS5 (``faq_fts``) or PostgreSQL
full-text search (``websearch_to_tsquery`` over the expression migration
0002_knowledge indexes). Every public method is one transaction
(``Database.run``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, and_, delete, func, or_, select, text, update

from storage.db import as_utc, utcnow
from storage.faq_vectors import load_text_vectors, prune_text_vectors, put_text_vectors
from storage.faq_versions import (
    FaqVersion,
    VersionsStored,
    load_versions,
    put_version_embeddings,
    store_versions,
)
from storage.keywords import index_text, ranked_match_query, search_terms
from storage.models import (
    escalations,
    faq_answers,
    faq_entries,
    faq_phrasings,
    knowledge_settings,
)
from storage.sql import Store

T = TypeVar("T")

GLOBAL = ""  # the tenant of deployment-wide entries
# Settings of the whole deployment (not of a tenant or a conversation).
DEPLOYMENT = "deployment"
# Name of the embedding model the stored vectors should come from; unset: the base model.
EMBEDDING_MODEL_SETTING = "embedding_model"
# A conversation's open draft, under the scope "conversation:<conversation key>".
DRAFT_SETTING = "draft"
# Ids per IN (...) list: well under SQLite's and asyncpg's bound-parameter limits.
_CHUNK = 500

_WORD = re.compile(r"\w+")


def entry_key(external_id: str | None, question: str) -> str:
    """The re-import key: the external id, else the normalised question."""
    if external_id:
        return f"id:{external_id}"
    norm = " ".join(_WORD.findall(question.lower()))
    if len(norm) > 280:
        norm = norm[:200] + "#" + hashlib.sha1(norm.encode()).hexdigest()
    return f"q:{norm}"


@dataclass(frozen=True, slots=True)
class EntryInput:
    """One FAQ entry as written by an admin or an import file."""

    question: str
    answer: str
    alternatives: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    source: str = ""
    external_id: str | None = None
    updated_at: datetime | None = None

    @property
    def key(self) -> str:
        return entry_key(self.external_id, self.question)

    @property
    def search_text(self) -> str:
        return "\n".join([self.question, *self.alternatives])


@dataclass(frozen=True, slots=True)
class FaqEntry:
    id: int
    tenant: str
    key: str
    external_id: str | None
    question: str
    answer: str
    alternatives: tuple[str, ...]
    tags: tuple[str, ...]
    source: str
    updated_at: datetime
    embedding: bytes | None = field(default=None, repr=False)
    embedding_model: str = ""

    @property
    def ref(self) -> str:
        """How users and exports name the entry: its external id, else its row id."""
        return self.external_id or str(self.id)


@dataclass(frozen=True, slots=True)
class Phrasing:
    """A customer's wording of an entry's question, seen by ``tenant`` ("": all)."""

    id: int
    tenant: str
    entry_id: int
    text: str
    embedding: bytes | None = field(default=None, repr=False)
    embedding_model: str = ""


@dataclass(frozen=True, slots=True)
class UpsertResult:
    created: int
    updated: int
    unchanged: int


@dataclass(frozen=True, slots=True)
class Escalation:
    id: int
    tenant: str
    conversation_key: str
    user_id: str
    question: str
    reason: str
    status: str
    created_at: datetime


class KnowledgeRepository(Store):
    # -- entries -----------------------------------------------------------------

    async def upsert_many(
        self,
        tenant: str,
        items: Sequence[tuple[EntryInput, bytes | None]],
        *,
        embedding_model: str,
    ) -> UpsertResult:
        """Insert or update entries by (tenant, key), all in one transaction.

        An entry whose text is unchanged keeps its row (and its embedding).
        """

        def op(conn: Connection) -> UpsertResult:
            counts = {"created": 0, "updated": 0, "unchanged": 0}
            for item, vectors in items:
                counts[self._upsert(conn, tenant, item, vectors, embedding_model)] += 1
            return UpsertResult(counts["created"], counts["updated"], counts["unchanged"])

        return await self._run("store FAQ entries", op)

    def _upsert(
        self,
        conn: Connection,
        tenant: str,
        item: EntryInput,
        vectors: bytes | None,
        model: str,
    ) -> str:
        now = utcnow()
        values: dict[str, Any] = {
            "external_id": item.external_id,
            "question": item.question,
            "answer": item.answer,
            "alternatives": list(item.alternatives),
            "tags": list(item.tags),
            "source": item.source,
            # PostgreSQL's generated tsvector reads this column (weight A).
            "search_text": index_text(item.search_text),
            "embedding": vectors,
            "embedding_model": model if vectors is not None else "",
            "updated_at": item.updated_at or now,
            "changed_at": now,
        }
        row = conn.execute(
            select(
                faq_entries.c.id,
                faq_entries.c.question,
                faq_entries.c.answer,
                faq_entries.c.alternatives,
                faq_entries.c.tags,
                faq_entries.c.source,
                faq_entries.c.search_text,
            ).where(faq_entries.c.tenant == tenant, faq_entries.c.key == item.key)
        ).first()
        if row is None:
            entry_id = conn.execute(
                faq_entries.insert()
                .values(tenant=tenant, key=item.key, created_at=now, **values)
                .returning(faq_entries.c.id)
            ).scalar_one()
            self._index(conn, entry_id, item)
            return "created"
        same = (
            row.question == item.question
            and row.answer == item.answer
            and list(row.alternatives) == list(item.alternatives)
            and list(row.tags) == list(item.tags)
            and row.source == item.source
        )
        if same:
            if row.search_text != values["search_text"]:
                # Indexed before keyword terms for CJK and compounds: index it again.
                conn.execute(
                    update(faq_entries)
                    .where(faq_entries.c.id == row.id)
                    .values(search_text=values["search_text"])
                )
                self._index(conn, row.id, item)
            return "unchanged"
        conn.execute(update(faq_entries).where(faq_entries.c.id == row.id).values(**values))
        self._index(conn, row.id, item)
        return "updated"

    def _index(self, conn: Connection, entry_id: int, item: EntryInput) -> None:
        if self.dialect != "sqlite":
            return  # PostgreSQL indexes the row itself (expression index)
        conn.execute(text("DELETE FROM faq_fts WHERE rowid = :id"), {"id": entry_id})
        conn.execute(
            text("INSERT INTO faq_fts(rowid, question, answer) VALUES (:id, :q, :a)"),
            {"id": entry_id, "q": index_text(item.search_text), "a": index_text(item.answer)},
        )

    async def set_embeddings(self, vectors: dict[int, bytes], *, embedding_model: str) -> None:
        """Store vectors computed later (backfill after a model change)."""
        # changed_at stays: every process computes the same vectors.
        await self._run(
            "store FAQ embeddings", lambda conn: _put_embeddings(conn, vectors, embedding_model)
        )

    async def use_embedding_model(self, vectors: dict[int, bytes], embedding_model: str) -> None:
        """Store every entry's vectors from a new model and make it the deployment's
        model, in one transaction: readers see either the old model or the new one."""

        def op(conn: Connection) -> None:
            _put_embeddings(conn, vectors, embedding_model)
            _put_setting(conn, DEPLOYMENT, EMBEDDING_MODEL_SETTING, embedding_model)

        await self._run("switch the embedding model", op)

    async def remove(self, tenant: str, ref: str) -> FaqEntry | None:
        """Delete the tenant's entry named by external id or row id; return it."""

        def op(conn: Connection) -> FaqEntry | None:
            entry = self._find(conn, tenant, ref)
            if entry is None:
                return None
            conn.execute(delete(faq_entries).where(faq_entries.c.id == entry.id))
            if self.dialect == "sqlite":
                conn.execute(text("DELETE FROM faq_fts WHERE rowid = :id"), {"id": entry.id})
            return entry

        return await self._run("remove an FAQ entry", op)

    async def get(self, tenant: str, key: str) -> FaqEntry | None:
        """The tenant's entry with this re-import key (see ``entry_key``)."""

        def op(conn: Connection) -> FaqEntry | None:
            row = conn.execute(
                select(faq_entries).where(faq_entries.c.tenant == tenant, faq_entries.c.key == key)
            ).first()
            return entry_from_row(row) if row is not None else None

        return await self._run("read an FAQ entry", op)

    def _find(self, conn: Connection, tenant: str, ref: str) -> FaqEntry | None:
        cond = faq_entries.c.external_id == ref
        if ref.isdigit():
            cond = or_(cond, faq_entries.c.id == int(ref))
        row = conn.execute(
            select(faq_entries).where(faq_entries.c.tenant == tenant, cond).limit(1)
        ).first()
        return entry_from_row(row) if row is not None else None

    async def entries(
        self,
        *,
        tenant: str | None = None,
        visible_to: str | None = None,
        with_embeddings: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[FaqEntry]:
        """Entries ordered by id. ``tenant``: exactly that scope; ``visible_to``:
        the global entries plus that tenant's; neither: everything."""
        cols = list(faq_entries.c)
        if not with_embeddings:
            cols = [c for c in cols if c.name != "embedding"]
        query = select(*cols).order_by(faq_entries.c.id).offset(offset)
        if tenant is not None:
            query = query.where(faq_entries.c.tenant == tenant)
        if visible_to is not None:
            query = query.where(faq_entries.c.tenant.in_([GLOBAL, visible_to]))
        if limit is not None:
            query = query.limit(limit)
        return await self._run(
            "read FAQ entries", lambda conn: [entry_from_row(r) for r in conn.execute(query).all()]
        )

    async def signature(self) -> tuple[int, int, datetime | None, int, int]:
        """Changes whenever an entry or phrasing is added, removed or edited (cheap to poll)."""
        query = select(
            func.count(),
            func.coalesce(func.max(faq_entries.c.id), 0),
            func.max(faq_entries.c.changed_at),
        )
        phrased = select(func.count(), func.coalesce(func.max(faq_phrasings.c.id), 0))

        def op(conn: Connection) -> tuple[int, int, datetime | None, int, int]:
            row = conn.execute(query).one()
            more = conn.execute(phrased).one()
            return int(row[0]), int(row[1]), row[2], int(more[0]), int(more[1])

        return await self._run("read the FAQ", op)

    async def add_phrasing(
        self,
        *,
        tenant: str,
        entry_id: int,
        text: str,
        user_id: str,
        embedding: bytes,
        embedding_model: str,
    ) -> bool:
        """Store a phrasing of an entry; False when the tenant already has it."""
        phrase = " ".join(text.split())[:1000]

        def op(conn: Connection) -> bool:
            known = conn.execute(
                select(faq_phrasings.c.id).where(
                    faq_phrasings.c.tenant == tenant,
                    faq_phrasings.c.entry_id == entry_id,
                    faq_phrasings.c.text == phrase,
                )
            ).first()
            if known is not None:
                return False
            conn.execute(
                faq_phrasings.insert().values(
                    tenant=tenant,
                    entry_id=entry_id,
                    text=phrase,
                    user_id=user_id,
                    embedding=embedding,
                    embedding_model=embedding_model,
                    created_at=utcnow(),
                )
            )
            return True

        return await self._run("store a phrasing", op)

    async def store_versions(
        self,
        tenant: str,
        language: str,
        items: Sequence[tuple[EntryInput, bytes | None]],
        *,
        embedding_model: str,
    ) -> VersionsStored:
        """Store ``language``'s version of the tenant's entries with the same keys."""
        rows = [(e.key, e.question, e.answer, e.alternatives, v) for e, v in items]
        return await self._run(
            "store FAQ versions",
            lambda conn: store_versions(conn, tenant, language, rows, embedding_model),
        )

    async def versions(self, *, with_embeddings: bool = False) -> list[FaqVersion]:
        """Every entry's versions in further languages, ordered by id."""
        return await self._run(
            "read FAQ versions", lambda conn: load_versions(conn, with_embeddings=with_embeddings)
        )

    async def set_version_embeddings(
        self, vectors: dict[int, bytes], *, embedding_model: str
    ) -> None:
        await self._run(
            "store version vectors",
            lambda conn: put_version_embeddings(conn, vectors, embedding_model),
        )

    async def text_vectors(self, model: str, digests: Sequence[str]) -> dict[str, bytes]:
        """Stored vectors of FAQ texts under a second model, by text digest."""
        return await self._run("read vectors", lambda c: load_text_vectors(c, model, digests))

    async def set_text_vectors(self, model: str, vectors: dict[str, bytes]) -> None:
        await self._run("store vectors", lambda c: put_text_vectors(c, model, vectors.items()))

    async def prune_text_vectors(self, model: str, used: set[str]) -> int:
        """Drop ``model``'s vectors of texts not in ``used``; how many went."""
        return await self._run("prune vectors", lambda c: prune_text_vectors(c, model, used))

    async def phrasings(
        self, *, tenant: str | None = None, with_embeddings: bool = False
    ) -> list[Phrasing]:
        """Phrasings ordered by id; ``tenant``: only that scope's."""
        cols = [
            faq_phrasings.c.id,
            faq_phrasings.c.tenant,
            faq_phrasings.c.entry_id,
            faq_phrasings.c.text,
            faq_phrasings.c.embedding_model,
        ]
        if with_embeddings:
            cols.append(faq_phrasings.c.embedding)
        query = select(*cols).order_by(faq_phrasings.c.id)
        if tenant is not None:
            query = query.where(faq_phrasings.c.tenant == tenant)

        def op(conn: Connection) -> list[Phrasing]:
            return [
                Phrasing(
                    id=int(r.id),
                    tenant=r.tenant,
                    entry_id=int(r.entry_id),
                    text=r.text,
                    embedding=r._mapping.get("embedding"),
                    embedding_model=r.embedding_model,
                )
                for r in conn.execute(query)
            ]

        return await self._run("read phrasings", op)

    async def share_phrasing(self, phrasing_id: int) -> bool:
        """Make a tenant's phrasing every tenant's (an owner's decision)."""

        def op(conn: Connection) -> bool:
            return bool(
                conn.execute(
                    update(faq_phrasings)
                    .where(faq_phrasings.c.id == phrasing_id)
                    .values(tenant=GLOBAL)
                ).rowcount
            )

        return await self._run("share a phrasing", op)

    async def set_phrasing_embeddings(
        self, vectors: dict[int, bytes], *, embedding_model: str
    ) -> None:
        def op(conn: Connection) -> None:
            for phrasing_id, blob in vectors.items():
                conn.execute(
                    update(faq_phrasings)
                    .where(faq_phrasings.c.id == phrasing_id)
                    .values(embedding=blob, embedding_model=embedding_model)
                )

        await self._run("store phrasing vectors", op)

    async def keyword_search(
        self, question: str, *, tenant: str, limit: int = 50
    ) -> list[tuple[int, float]]:
        """Full-text matches visible to ``tenant``: (entry id, score), best first.

        Scores are positive, larger is better, comparable within one call only.
        A question match weighs more than an answer match.
        """
        terms = search_terms(question)
        if not terms:
            return []
        # search_vector: generated column of migration 0002 (weights
        # A = question and phrasings, B = answer).
        sql, params = ranked_match_query(
            sqlite=self.dialect == "sqlite",
            fts="faq_fts",
            table="faq_entries",
            terms=terms,
            tenant=tenant,
            limit=limit,
        )

        def op(conn: Connection) -> list[tuple[int, float]]:
            return [(int(r[0]), float(r[1])) for r in conn.execute(sql, params)]

        return await self._run("search the FAQ", op)

    # -- answers and escalations --------------------------------------------------

    async def record_answer(
        self,
        *,
        tenant: str,
        conversation_key: str,
        question: str,
        path: str,
        entries: list[dict[str, Any]],
        answer: str,
        escalate_reason: str | None = None,
        user_id: str = "",
    ) -> tuple[int, int | None]:
        """Log an answer (and, if ``escalate_reason``, open an escalation) atomically."""
        now = utcnow()

        def op(conn: Connection) -> tuple[int, int | None]:
            answer_id = conn.execute(
                faq_answers.insert()
                .values(
                    tenant=tenant,
                    conversation_key=conversation_key,
                    question=question,
                    path=path,
                    entries=entries,
                    answer=answer,
                    user_id=user_id,
                    created_at=now,
                )
                .returning(faq_answers.c.id)
            ).scalar_one()
            escalation_id = None
            if escalate_reason is not None:
                escalation_id = conn.execute(
                    escalations.insert()
                    .values(
                        tenant=tenant,
                        conversation_key=conversation_key,
                        user_id=user_id,
                        question=question,
                        reason=escalate_reason[:200],
                        answer_id=answer_id,
                        status="open",
                        created_at=now,
                    )
                    .returning(escalations.c.id)
                ).scalar_one()
            return int(answer_id), escalation_id

        return await self._run("log the FAQ answer", op)

    async def answers(
        self, *, conversation_key: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Logged answers, newest first."""
        query = select(faq_answers).order_by(faq_answers.c.id.desc()).limit(limit)
        if conversation_key is not None:
            query = query.where(faq_answers.c.conversation_key == conversation_key)
        return await self._run(
            "read FAQ answers",
            lambda conn: [dict(r._mapping) for r in conn.execute(query)],
        )

    async def escalations(self, *, status: str | None = "open") -> list[Escalation]:
        query = select(escalations).order_by(escalations.c.id)
        if status is not None:
            query = query.where(escalations.c.status == status)
        rows = await self._run("read escalations", lambda conn: conn.execute(query).all())
        return [
            Escalation(
                id=r.id,
                tenant=r.tenant,
                conversation_key=r.conversation_key,
                user_id=r.user_id,
                question=r.question,
                reason=r.reason,
                status=r.status,
                created_at=r.created_at,
            )
            for r in rows
        ]

    async def set_escalation_status(self, escalation_id: int, status: str) -> bool:
        statement = (
            update(escalations).where(escalations.c.id == escalation_id).values(status=status)
        )
        return await self._run(
            "update an escalation", lambda conn: bool(conn.execute(statement).rowcount)
        )

    # -- settings -------------------------------------------------------------------

    async def get_setting(self, scope: str, name: str) -> str | None:
        query = select(knowledge_settings.c.value).where(
            and_(knowledge_settings.c.scope == scope, knowledge_settings.c.name == name)
        )
        return await self._run(
            f"read the {name} setting", lambda conn: conn.execute(query).scalar_one_or_none()
        )

    async def set_setting(self, scope: str, name: str, value: str | None) -> None:
        """Set (or with ``None`` clear) one setting."""

        await self._run(
            f"store the {name} setting", lambda conn: _put_setting(conn, scope, name, value)
        )


@dataclass(frozen=True, slots=True)
class KnowledgeForgotten:
    """Rows ``forget_knowledge`` deleted."""

    answers: int
    escalations: int
    drafts: int


def forget_knowledge(
    conn: Connection,
    user_id: str,
    *,
    questions: Mapping[str, Collection[str]],
    own_conversations: Collection[str],
) -> KnowledgeForgotten:
    """Delete what the knowledge base kept about one person.

    That is the answer log and escalations for their questions, and open
    drafts in ``own_conversations`` (conversation keys). ``questions`` (texts
    they sent, by conversation key) finds answers logged before the log
    recorded who asked. Runs inside the caller's transaction.
    """
    answer_ids = set(
        conn.execute(select(faq_answers.c.id).where(faq_answers.c.user_id == user_id)).scalars()
    )
    for key, texts in questions.items():
        for chunk in _chunks(sorted(texts)):
            answer_ids.update(
                conn.execute(
                    select(faq_answers.c.id).where(
                        faq_answers.c.user_id == "",
                        faq_answers.c.conversation_key == key,
                        faq_answers.c.question.in_(chunk),
                    )
                ).scalars()
            )
    conn.execute(delete(faq_phrasings).where(faq_phrasings.c.user_id == user_id))
    escalated = conn.execute(delete(escalations).where(escalations.c.user_id == user_id)).rowcount
    answers = 0
    for chunk in _chunks(sorted(answer_ids)):
        escalated += conn.execute(
            delete(escalations).where(escalations.c.answer_id.in_(chunk))
        ).rowcount
        answers += conn.execute(delete(faq_answers).where(faq_answers.c.id.in_(chunk))).rowcount
    drafts = 0
    scopes = sorted(f"conversation:{key}" for key in own_conversations)
    for chunk in _chunks(scopes):
        drafts += conn.execute(
            delete(knowledge_settings).where(
                knowledge_settings.c.scope.in_(chunk), knowledge_settings.c.name == DRAFT_SETTING
            )
        ).rowcount
    return KnowledgeForgotten(answers=answers, escalations=escalated, drafts=drafts)


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _put_embeddings(conn: Connection, vectors: dict[int, bytes], embedding_model: str) -> None:
    for entry_id, blob in vectors.items():
        conn.execute(
            update(faq_entries)
            .where(faq_entries.c.id == entry_id)
            .values(embedding=blob, embedding_model=embedding_model)
        )


def _put_setting(conn: Connection, scope: str, name: str, value: str | None) -> None:
    conn.execute(
        delete(knowledge_settings).where(
            knowledge_settings.c.scope == scope, knowledge_settings.c.name == name
        )
    )
    if value is not None:
        conn.execute(
            knowledge_settings.insert().values(
                scope=scope, name=name, value=value, updated_at=utcnow()
            )
        )


def entry_from_row(row: Any) -> FaqEntry:
    """An ``FaqEntry`` from a row of ``faq_entries`` (with or without its vectors)."""
    m = row._mapping
    return FaqEntry(
        id=int(m["id"]),
        tenant=m["tenant"],
        key=m["key"],
        external_id=m["external_id"],
        question=m["question"],
        answer=m["answer"],
        alternatives=tuple(m["alternatives"] or ()),
        tags=tuple(m["tags"] or ()),
        source=m["source"],
        updated_at=as_utc(m["updated_at"]),
        embedding=m.get("embedding"),
        embedding_model=m["embedding_model"],
    )
