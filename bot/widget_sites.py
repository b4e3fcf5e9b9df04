"""Websites that embed the chat widget: what a valid site is, and the one
place that adds, changes and revokes them, for the CLI and the console alike
(each action leaves the same audit entry wherever it was done)."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bot.handoff.config import OWN_WIDGET_TENANT
from storage.addresses import ConversationAddress
from storage.widget_repo import SiteLook, WidgetRepository, WidgetSite

if TYPE_CHECKING:
    from bot.team.service import Team

# The tenant of a site unless it belongs to an installed Slack workspace: the
# deployment's own, shared with the local web chat.
OWN_TENANT = OWN_WIDGET_TENANT
POSITIONS = ("right", "left")
MAX_TITLE = 60
MAX_GREETING = 300
MAX_ORIGINS = 20
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_SHORT_COLOR = re.compile(r"^#[0-9a-fA-F]{3}$")
_HOST = re.compile(r"^[a-z0-9.-]+$|^\[[0-9a-f:.]+\]$")


class SiteError(ValueError):
    """A site setting that cannot work; the message says what to write instead.
    ``reason`` and ``values`` name it for a page that says it in its reader's
    language (the console)."""

    def __init__(self, message: str, reason: str = "", **values: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.values = values


def parse_origin(raw: str) -> str:
    """``raw`` as a browser writes an ``Origin`` header (``https://shop.example``,
    lower case, no default port, no path), or ``SiteError``."""
    text = raw.strip()
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = -1
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if (
        scheme not in ("http", "https")
        or not host
        or not _HOST.match(host if ":" not in host else f"[{host}]")
        or port == -1
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
    ):
        raise SiteError(
            f"{raw!r} is not an origin: write scheme and host (and a port when it is not "
            "the default), e.g. https://shop.example or http://127.0.0.1:8000",
            "not_origin",
            origin=raw,
        )
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def parse_origins(raw: Sequence[str]) -> tuple[str, ...]:
    origins = tuple(dict.fromkeys(parse_origin(o) for o in raw))
    if not origins:
        raise SiteError("name at least one origin whose pages may show the widget", "no_origin")
    if len(origins) > MAX_ORIGINS:
        raise SiteError(
            f"a site allows at most {MAX_ORIGINS} origins; add another site",
            "too_many_origins",
            most=MAX_ORIGINS,
        )
    return origins


def changed_look(
    look: SiteLook,
    *,
    title: str | None = None,
    color: str | None = None,
    greeting: str | None = None,
    position: str | None = None,
) -> SiteLook:
    """``look`` with the given settings, each checked, or ``SiteError``."""
    if title is not None:
        title = title.strip()
        if not title or len(title) > MAX_TITLE:
            raise SiteError(f"the title needs 1 to {MAX_TITLE} characters", "title", most=MAX_TITLE)
        look = replace(look, title=title)
    if color is not None:
        color = color.strip()
        if _SHORT_COLOR.match(color):
            color = "#" + "".join(c * 2 for c in color[1:])
        if not _COLOR.match(color):
            raise SiteError(
                f"{color!r} is not a colour: write it as #rrggbb, e.g. #2f6fde",
                "color",
                color=color,
            )
        look = replace(look, color=color.lower())
    if greeting is not None:
        greeting = greeting.strip()
        if len(greeting) > MAX_GREETING:
            raise SiteError(
                f"the greeting may have at most {MAX_GREETING} characters",
                "greeting",
                most=MAX_GREETING,
            )
        look = replace(look, greeting=greeting)
    if position is not None:
        if position not in POSITIONS:
            raise SiteError(
                f"the position is one of: {', '.join(POSITIONS)}",
                "position",
                positions=", ".join(POSITIONS),
            )
        look = replace(look, position=position)
    return look


def user_hash(secret: str, user: str) -> str:
    """The ``data-user-hash`` a site's server writes for signed-in ``user``:
    HMAC-SHA256 of the id under the site's secret, in hex."""
    return hmac.new(secret.encode(), user.encode(), hashlib.sha256).hexdigest()


def user_hash_valid(site: WidgetSite, user: str, given: str) -> bool:
    return hmac.compare_digest(user_hash(site.secret, user), given.strip().lower())


class WidgetSites:
    """Adds, lists, changes and revokes sites, each change audited under the
    site's tenant with ``actor`` (``cli`` or the console's person)."""

    def __init__(self, repository: WidgetRepository, *, team: Team | None = None) -> None:
        self.repository = repository
        self.team = team

    async def sites(self) -> list[WidgetSite]:
        return await self.repository.sites()

    async def site(self, key: str) -> WidgetSite | None:
        return await self.repository.site(key)

    async def transcript(self, ref: ConversationAddress) -> list[tuple[str, str]]:
        """The conversation's stored questions and answers, oldest first."""
        return await self.repository.transcript(ref)

    async def add(
        self, origins: Sequence[str], *, tenant: str = "", actor: str, look: SiteLook | None = None
    ) -> WidgetSite:
        allowed = parse_origins(origins)
        tenant = tenant.strip() or OWN_TENANT
        if tenant != OWN_TENANT and not await self.repository.installed_workspace(tenant):
            raise SiteError(
                f"{tenant!r} is not an installed Slack workspace: leave --tenant out for the "
                "deployment's own tenant, or name the team id (T…) of a workspace that "
                "installed the app",
                "not_workspace",
                tenant=tenant,
            )
        site = await self.repository.add(origins=allowed, tenant=tenant, look=look or SiteLook())
        await self._audit(site, actor, "widget_site.add", {"origins": list(allowed)})
        return site

    async def change(
        self,
        key: str,
        *,
        actor: str,
        origins: Sequence[str] | None = None,
        title: str | None = None,
        color: str | None = None,
        greeting: str | None = None,
        position: str | None = None,
    ) -> WidgetSite:
        site = await self._existing(key)
        look = changed_look(
            site.look, title=title, color=color, greeting=greeting, position=position
        )
        allowed = parse_origins(origins) if origins is not None else None
        changed = await self.repository.change(key, look=look, origins=allowed)
        if changed is None:
            raise SiteError(f"there is no widget site {key!r}", "no_site", key=key)
        details: dict[str, object] = {
            name: value
            for name, value in (
                ("title", title),
                ("color", color),
                ("greeting", greeting),
                ("position", position),
            )
            if value is not None
        }
        if allowed is not None:
            details["origins"] = list(allowed)
        await self._audit(changed, actor, "widget_site.set", details)
        return changed

    async def remove(self, key: str, *, actor: str) -> WidgetSite:
        site = await self._existing(key)
        if not await self.repository.remove(key):
            raise SiteError(f"there is no widget site {key!r}", "no_site", key=key)
        await self._audit(site, actor, "widget_site.remove", {"origins": list(site.origins)})
        return site

    async def _existing(self, key: str) -> WidgetSite:
        site = await self.repository.site(key)
        if site is None:
            raise SiteError(
                f"there is no widget site {key!r} (deskmate widget list shows them)",
                "no_site",
                key=key,
            )
        return site

    async def _audit(
        self, site: WidgetSite, actor: str, action: str, details: dict[str, object]
    ) -> None:
        if self.team is not None:
            await self.team.audit(site.tenant, actor, action, site.key, details)
