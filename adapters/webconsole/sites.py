"""The console's widget sites: the websites that embed the chat widget, with
their snippet, added, changed and revoked as ``deskmate widget`` does (the
same audit entries, under the person signed in)."""

from __future__ import annotations

import logging

from aiohttp import web

from adapters.webconsole.pages import Room, _redirect
from bot.messages import keys, say
from bot.widget_sites import OWN_TENANT, POSITIONS, SiteError, WidgetSites
from storage.widget_repo import WidgetSite

log = logging.getLogger(__name__)
_KEYS = keys()

BACK = "/console/sites"


class SitePages(Room):
    """The list of sites with their snippets, and add, change and revoke."""

    @property
    def sites(self) -> WidgetSites | None:
        return self.services.sites

    async def sites_page(self, request: web.Request) -> web.StreamResponse:
        sites = self.sites
        shown = []
        if sites is not None:
            shown = [s for s in await sites.sites() if self.reaches(request, s.tenant)]
        client = self.client(request)
        base = f"{'https' if client.secure else 'http'}://{request.host}"
        return self._render(
            request,
            "sites.html",
            nav="sites",
            sites=shown,
            available=sites is not None,
            base=base,
            positions=POSITIONS,
            own_tenant=OWN_TENANT,
            **await self._page_values(request),
        )

    async def add_site(self, request: web.Request) -> web.StreamResponse:
        sites = self.sites
        language = self.language(request)
        if sites is None:
            return _unmanaged(language)
        form = request["form"]
        origins = str(form.get("origins", "")).split()
        tenant = str(form.get("tenant", "")).strip() or OWN_TENANT
        if not self.reaches(request, tenant):
            return await self._forbidden(
                request, say("console.sites.tenant", language, tenant=tenant)
            )
        actor = self.viewer(request).actor
        try:
            site = await sites.add(origins, tenant=tenant, actor=actor)
        except SiteError as exc:
            why = _why(exc, language)
            self._say(request, say("console.sites.not_added", language, why=why))
            return _redirect(BACK)
        log.info("console: widget site %s added by %s", site.key, actor)
        self._say(request, say("console.sites.added_one", language, key=site.key))
        return _redirect(f"{BACK}#{site.key}")

    async def edit_site(self, request: web.Request) -> web.StreamResponse:
        found = await self._site(request)
        if not isinstance(found, WidgetSite):
            return found
        assert self.sites is not None
        form = request["form"]
        actor = self.viewer(request).actor
        language = self.language(request)
        try:
            await self.sites.change(
                found.key,
                actor=actor,
                origins=str(form.get("origins", "")).split(),
                title=str(form.get("title", "")),
                color=str(form.get("color", "")),
                greeting=str(form.get("greeting", "")),
                position=str(form.get("position", "")),
            )
        except SiteError as exc:
            why = _why(exc, language)
            self._say(request, say("console.sites.unchanged", language, key=found.key, why=why))
            return _redirect(f"{BACK}#{found.key}")
        self._say(request, say("console.sites.saved", language, key=found.key))
        return _redirect(f"{BACK}#{found.key}")

    async def remove_site(self, request: web.Request) -> web.StreamResponse:
        found = await self._site(request)
        if not isinstance(found, WidgetSite):
            return found
        assert self.sites is not None
        actor = self.viewer(request).actor
        try:
            await self.sites.remove(found.key, actor=actor)
        except SiteError as exc:
            self._say(request, _why(exc, self.language(request)))
            return _redirect(BACK)
        log.info("console: widget site %s revoked by %s", found.key, actor)
        self._say(request, say("console.sites.revoked", self.language(request), key=found.key))
        return _redirect(BACK)

    async def _site(self, request: web.Request) -> WidgetSite | web.StreamResponse:
        """The site the path names, when the person signed in reaches its tenant."""
        language = self.language(request)
        if self.sites is None:
            return _unmanaged(language)
        key = request.match_info["key"]
        site = await self.sites.site(key)
        if site is None:
            self._say(request, say("console.sites.missing", language, key=key))
            return _redirect(BACK)
        if not self.reaches(request, site.tenant):
            return await self._forbidden(request, say("console.sites.what", language, key=key))
        return site


def _unmanaged(language: str) -> web.Response:
    return web.json_response({"error": say("console.sites.unavailable", language)}, status=503)


def _why(error: SiteError, language: str) -> str:
    """What is wrong with a site's setting, in ``language`` where the catalog says it."""
    key = f"console.site_error.{error.reason}"
    return say(key, language, **error.values) if key in _KEYS else str(error)
