"""Support spaces that tenants chose for themselves (``/desk``).

One row per tenant (platform and tenant id) at most: the chat of that tenant
where its tickets go, or "" when its admin turned the help desk off for it.
A tenant without a row is served as the environment says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select

from storage.db import as_utc, utcnow
from storage.models import tenant_desks
from storage.sql import Store


@dataclass(frozen=True, slots=True)
class TenantDesk:
    """A tenant's own choice: ``chat`` is its support space ("": none)."""

    platform: str
    tenant: str
    chat: str
    set_by: str
    updated_at: datetime


class DeskRepository(Store):
    """Async storage of tenants' own support spaces; every method is one transaction."""

    async def get(self, platform: str, tenant: str) -> TenantDesk | None:
        def op(conn: Connection) -> TenantDesk | None:
            row = conn.execute(
                select(tenant_desks).where(
                    tenant_desks.c.platform == platform, tenant_desks.c.tenant == tenant
                )
            ).first()
            return _desk(row) if row is not None else None

        return await self._run("read a tenant's support space", op)

    async def all(self) -> list[TenantDesk]:
        def op(conn: Connection) -> list[TenantDesk]:
            rows = conn.execute(
                select(tenant_desks).order_by(tenant_desks.c.platform, tenant_desks.c.tenant)
            )
            return [_desk(r) for r in rows]

        return await self._run("read the tenants' support spaces", op)

    async def put(self, platform: str, tenant: str, *, chat: str, by: str) -> None:
        """Set the tenant's support space (``chat`` "": none), replacing its last choice."""
        now = utcnow()

        def op(conn: Connection) -> None:
            stmt = self._insert(tenant_desks).values(
                platform=platform, tenant=tenant, chat=chat, set_by=by, updated_at=now
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["platform", "tenant"],
                    set_={"chat": chat, "set_by": by, "updated_at": now},
                )
            )

        await self._run("store a tenant's support space", op)

    async def remove(self, platform: str, tenant: str) -> bool:
        """Forget the tenant's choice (the environment decides again); whether there was one."""

        def op(conn: Connection) -> bool:
            return bool(
                conn.execute(
                    delete(tenant_desks).where(
                        tenant_desks.c.platform == platform, tenant_desks.c.tenant == tenant
                    )
                ).rowcount
            )

        return await self._run("remove a tenant's support space", op)


def _desk(row: Any) -> TenantDesk:
    return TenantDesk(
        platform=row.platform,
        tenant=row.tenant,
        chat=row.chat,
        set_by=row.set_by,
        updated_at=as_utc(row.updated_at) or row.updated_at,
    )
