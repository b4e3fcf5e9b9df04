"""Builders for tests that call the repository directly."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from sqlalchemy import Connection, select

from storage.models import users
from storage.repository import ConversationAddress, InboundEvent, Repository

_ids = itertools.count(1)


def make_event(
    text: str,
    *,
    chat: str = "c1",
    user: str = "u1",
    event_id: str | None = None,
    platform: str = "test",
    tenant: str = "t1",
    thread: str = "",
) -> InboundEvent:
    return InboundEvent(
        conversation=ConversationAddress(platform, tenant, chat, thread),
        event_id=event_id or f"ev{next(_ids)}",
        user_id=f"{platform}:{user}",
        text=text,
        user_name=f"name-{user}",
    )


async def store_legacy_role(repository: Repository, platform_user: str, role: str) -> None:
    """Put a role in ``users.role``, where older releases kept it (roles now
    live in ``team_roles``), so tests can check that such rows go too."""
    now = datetime.now(UTC)

    def op(conn: Connection) -> None:
        conn.execute(
            repository._insert(users)
            .values(platform_user=platform_user, role=role, created_at=now)
            .on_conflict_do_update(index_elements=["platform_user"], set_={"role": role})
        )

    await repository.db.run(op, what="store the user's role")


async def legacy_role(repository: Repository, platform_user: str) -> str | None:
    """The role ``users.role`` holds for ``platform_user`` (None: no row or none)."""
    query = select(users.c.role).where(users.c.platform_user == platform_user)
    return await repository.db.run(lambda conn: conn.execute(query).scalar())
