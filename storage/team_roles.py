"""Who works a tenant's desk (roles) and what staff did there (the audit trail).

A change of role writes its audit row in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, select

from storage.db import as_utc, utcnow
from storage.models import audit_log, team_roles
from storage.sql import Store

ROLES = ("admin", "agent")


@dataclass(frozen=True, slots=True)
class RoleGrant:
    tenant: str
    platform_user: str
    role: str
    granted_by: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    tenant: str
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.created_at.isoformat(),
            "tenant": self.tenant,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "details": self.details,
        }


class TeamRoles(Store):
    """Roles per tenant and the audit trail; every public method is one transaction."""

    # -- roles ---------------------------------------------------------------------

    async def set_role(
        self, tenant: str, platform_user: str, role: str | None, *, by: str
    ) -> str | None:
        """Give ``platform_user`` a role in ``tenant`` (None: none, a customer);
        returns the role they had. Audited in the same transaction."""
        if role is not None and role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        now = utcnow()

        def op(conn: Connection) -> str | None:
            where = and_(team_roles.c.tenant == tenant, team_roles.c.platform_user == platform_user)
            before = conn.execute(select(team_roles.c.role).where(where)).scalar()
            if role is None:
                conn.execute(delete(team_roles).where(where))
            else:
                conn.execute(
                    self._insert(team_roles)
                    .values(
                        tenant=tenant,
                        platform_user=platform_user,
                        role=role,
                        granted_by=by,
                        updated_at=now,
                    )
                    .on_conflict_do_update(
                        index_elements=["tenant", "platform_user"],
                        set_={"role": role, "granted_by": by, "updated_at": now},
                    )
                )
            insert_audit(
                conn,
                tenant,
                by,
                "role",
                platform_user,
                {"from": before or "customer", "to": role or "customer"},
                now,
            )
            return before

        return await self._run("store a role", op)

    async def role_of(self, tenant: str, platform_user: str) -> str | None:
        query = select(team_roles.c.role).where(
            team_roles.c.tenant == tenant, team_roles.c.platform_user == platform_user
        )
        return await self._run("read a role", lambda conn: conn.execute(query).scalar())

    async def roles(self, tenant: str) -> list[RoleGrant]:
        query = (
            select(team_roles)
            .where(team_roles.c.tenant == tenant)
            .order_by(team_roles.c.role, team_roles.c.platform_user)
        )

        def op(conn: Connection) -> list[RoleGrant]:
            return [
                RoleGrant(
                    r.tenant,
                    r.platform_user,
                    r.role,
                    r.granted_by,
                    as_utc(r.updated_at) or r.updated_at,
                )
                for r in conn.execute(query)
            ]

        return await self._run("read roles", op)

    # -- audit ---------------------------------------------------------------------

    async def audit(
        self,
        tenant: str,
        actor: str,
        action: str,
        target: str = "",
        details: dict[str, Any] | None = None,
    ) -> int:
        now = utcnow()
        return await self._run(
            "store an audit record",
            lambda conn: insert_audit(conn, tenant, actor, action, target, details or {}, now),
        )

    async def audit_entries(
        self, *, tenant: str | None = None, limit: int | None = None, newest_first: bool = True
    ) -> list[AuditEntry]:
        """Audit records of ``tenant`` (None: every tenant)."""
        order = audit_log.c.id.desc() if newest_first else audit_log.c.id
        query = select(audit_log).order_by(order)
        if tenant is not None:
            query = query.where(audit_log.c.tenant == tenant)
        if limit is not None:
            query = query.limit(limit)

        def op(conn: Connection) -> list[AuditEntry]:
            return [
                AuditEntry(
                    int(r.id),
                    r.tenant,
                    r.actor,
                    r.action,
                    r.target,
                    dict(r.details or {}),
                    as_utc(r.created_at) or r.created_at,
                )
                for r in conn.execute(query)
            ]

        return await self._run("read the audit trail", op)


def insert_audit(
    conn: Connection,
    tenant: str,
    actor: str,
    action: str,
    target: str,
    details: dict[str, Any],
    now: datetime,
) -> int:
    """Append an audit row inside the caller's transaction; returns its id."""
    return int(
        conn.execute(
            audit_log.insert()
            .values(
                tenant=tenant,
                actor=actor,
                action=action,
                target=target[:300],
                details=details,
                created_at=now,
            )
            .returning(audit_log.c.id)
        ).scalar_one()
    )
