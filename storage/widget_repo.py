"""The websites that embed the chat widget.

A site is a key the snippet names (``data-site``), the tenant its visitors
belong to, the origins whose pages may use it, the secret a site's own server
signs its signed-in users' ids with, and how the widget looks there. Every
worker reads the same rows, so a site added or revoked is seen by all of them
within the cache's lifetime.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from storage.addresses import ConversationAddress
from storage.db import utcnow
from storage.models import (
    conversations,
    inbound_events,
    messages,
    slack_installations,
    users,
    web_messages,
    widget_sites,
)
from storage.sql import Store, at_address

# The platform name of the widget's conversations.
WIDGET = "widget"


@dataclass(frozen=True, slots=True)
class SiteLook:
    """What a site's visitors see: the panel's title, its accent colour
    (``#rrggbb``), the first message and the corner it sits in."""

    title: str = "Chat with us"
    color: str = "#2f6fde"
    greeting: str = ""
    position: str = "right"


@dataclass(frozen=True, slots=True)
class WidgetSite:
    key: str
    tenant: str
    origins: tuple[str, ...]
    secret: str
    look: SiteLook
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        """What ``deskmate widget add|list --json`` prints (the secret is not part of it)."""
        return {"site": self.key, "origins": list(self.origins), "tenant": self.tenant}


class WidgetRepository(Store):
    """Sites: add, list, read, change the look of, and remove."""

    async def add(self, *, origins: Sequence[str], tenant: str, look: SiteLook) -> WidgetSite:
        """A new site with a fresh key and secret."""
        site = WidgetSite(
            key="site_" + secrets.token_urlsafe(15),
            tenant=tenant,
            origins=tuple(origins),
            secret=secrets.token_urlsafe(32),
            look=look,
            created_at=utcnow(),
        )

        def op(conn: Connection) -> None:
            conn.execute(
                widget_sites.insert().values(
                    key=site.key,
                    tenant=site.tenant,
                    origins=list(site.origins),
                    secret=site.secret,
                    title=look.title,
                    color=look.color,
                    greeting=look.greeting,
                    position=look.position,
                    created_at=site.created_at,
                )
            )

        await self._run("add a widget site", op)
        return site

    async def sites(self) -> list[WidgetSite]:
        """Every site, oldest first."""

        def op(conn: Connection) -> list[WidgetSite]:
            rows = conn.execute(select(widget_sites).order_by(widget_sites.c.created_at)).all()
            return [_site(row) for row in rows]

        return await self._run("list the widget sites", op)

    async def site(self, key: str) -> WidgetSite | None:
        def op(conn: Connection) -> WidgetSite | None:
            row = conn.execute(select(widget_sites).where(widget_sites.c.key == key)).first()
            return _site(row) if row is not None else None

        return await self._run("read a widget site", op)

    async def change(
        self, key: str, *, look: SiteLook, origins: Sequence[str] | None = None
    ) -> WidgetSite | None:
        """Give site ``key`` this look (and these origins); None when there is no such site."""
        values: dict[str, Any] = {
            "title": look.title,
            "color": look.color,
            "greeting": look.greeting,
            "position": look.position,
        }
        if origins is not None:
            values["origins"] = list(origins)

        def op(conn: Connection) -> int:
            return conn.execute(
                update(widget_sites).where(widget_sites.c.key == key).values(**values)
            ).rowcount

        if not await self._run("change a widget site", op):
            return None
        return await self.site(key)

    async def remove(self, key: str) -> bool:
        """Revoke site ``key``: its snippet shows nothing from now on. False
        when there was no such site."""

        def op(conn: Connection) -> int:
            return conn.execute(delete(widget_sites).where(widget_sites.c.key == key)).rowcount

        return bool(await self._run("remove a widget site", op))

    async def transcript(
        self, ref: ConversationAddress, *, limit: int = 50
    ) -> list[tuple[str, str]]:
        """The newest ``limit`` questions and answers of the conversation at
        ``ref``, oldest first, as (role, text): what a visitor's panel shows
        on a device that has not seen the conversation yet."""

        def op(conn: Connection) -> list[tuple[str, str]]:
            position = func.coalesce(messages.c.reply_to, messages.c.id)
            rows = conn.execute(
                select(messages.c.role, messages.c.text)
                .join(conversations, conversations.c.id == messages.c.conversation_id)
                # Questions and answers; commands (a rating, /human) stay with the device.
                .where(at_address(ref), messages.c.kind == "chat")
                .order_by(position.desc(), messages.c.id.desc())
                .limit(limit)
            ).all()
            return [(row.role, row.text) for row in reversed(rows)]

        return await self._run("read a widget conversation", op)

    async def installed_workspace(self, team_id: str) -> bool:
        """Whether Slack workspace ``team_id`` installed the app (a site may belong to it)."""

        def op(conn: Connection) -> bool:
            found = conn.execute(
                select(slack_installations.c.id)
                .where(slack_installations.c.team_id == team_id)
                .limit(1)
            ).first()
            return found is not None

        return await self._run("look up a Slack workspace", op)


def purge_widget_tenant(conn: Connection, tenant: str) -> None:
    """Inside the caller's transaction, remove what the widget keeps for a
    Slack workspace's sites beyond their conversations (which the caller
    deletes): the sites, what waits for their visitors, and the names of
    the people who wrote through them."""
    keys = list(
        conn.execute(select(widget_sites.c.key).where(widget_sites.c.tenant == tenant)).scalars()
    )
    people = conn.execute(
        select(inbound_events.c.user_id)
        .join(conversations, conversations.c.id == inbound_events.c.conversation_id)
        .where(conversations.c.platform == WIDGET, conversations.c.tenant == tenant)
        .distinct()
    ).scalars()
    # Stored as their platform user ids (``widget:<person>``).
    written = [str(person) for person in people]
    for start in range(0, len(written), 500):
        conn.execute(delete(users).where(users.c.platform_user.in_(written[start : start + 500])))
    for key in keys:
        conn.execute(delete(web_messages).where(web_messages.c.visitor.like(f"{key}.%")))
    conn.execute(delete(widget_sites).where(widget_sites.c.tenant == tenant))


def _site(row: Any) -> WidgetSite:
    return WidgetSite(
        key=row.key,
        tenant=row.tenant,
        origins=tuple(str(o) for o in (row.origins or [])),
        secret=row.secret,
        look=SiteLook(
            title=row.title, color=row.color, greeting=row.greeting, position=row.position
        ),
        created_at=row.created_at,
    )
