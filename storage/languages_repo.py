"""The customer's language as stored: the language last detected in each
conversation (a column of ``conversations``) and each tenant's default
(``tenant_languages``, set with ``/language``)."""

from __future__ import annotations

from sqlalchemy import Connection, delete, select, update

from storage.db import utcnow
from storage.models import conversations, tenant_languages
from storage.sql import Store


class LanguageRepository(Store):
    """Async storage of languages; every method is one transaction."""

    async def of_conversation(self, conversation_id: int) -> str | None:
        """The language last detected in the conversation (None: none yet)."""

        def op(conn: Connection) -> str | None:
            return conn.execute(
                select(conversations.c.language).where(conversations.c.id == conversation_id)
            ).scalar()

        return await self._run("read the conversation's language", op)

    async def detected(self, conversation_id: int, language: str) -> None:
        """Remember ``language`` as the conversation's last detected one."""

        def op(conn: Connection) -> None:
            conn.execute(
                update(conversations)
                .where(conversations.c.id == conversation_id)
                .where(
                    (conversations.c.language.is_(None)) | (conversations.c.language != language)
                )
                .values(language=language)
            )

        await self._run("store the conversation's language", op)

    async def of_tenant(self, platform: str, tenant: str) -> str | None:
        """The tenant's own default language (None: the deployment's)."""

        def op(conn: Connection) -> str | None:
            return conn.execute(
                select(tenant_languages.c.language).where(
                    tenant_languages.c.platform == platform, tenant_languages.c.tenant == tenant
                )
            ).scalar()

        return await self._run("read the tenant's language", op)

    async def set_tenant(self, platform: str, tenant: str, language: str, *, by: str) -> None:
        """Set the tenant's default language, replacing the last one."""
        now = utcnow()

        def op(conn: Connection) -> None:
            stmt = self._insert(tenant_languages).values(
                platform=platform, tenant=tenant, language=language, set_by=by, updated_at=now
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["platform", "tenant"],
                    set_={"language": language, "set_by": by, "updated_at": now},
                )
            )

        await self._run("store the tenant's language", op)

    async def clear_tenant(self, platform: str, tenant: str) -> None:
        def op(conn: Connection) -> None:
            conn.execute(
                delete(tenant_languages).where(
                    tenant_languages.c.platform == platform, tenant_languages.c.tenant == tenant
                )
            )

        await self._run("forget the tenant's language", op)
