"""Signing in to the console, its sessions and the guards on every page and write.

Signing in is per person: a one-time link from ``deskmate console link --user
ID`` or the personal token of ``deskmate console token --user ID`` (both stored
hashed; a link is spent on use and expires, a token lasts until revoked). The
shared ``DESKMATE_CONSOLE_TOKEN`` and a link printed without ``--user`` are the
owner's fallback. Each starts a session: a random cookie (HttpOnly,
SameSite=Strict, path /console) whose hash is stored with the session's CSRF
token and the person. Every page and API needs the session and the person's
role in the tenant it shows (``adapters.webconsole.people``); every write needs
the CSRF token as well, in the form (``csrf``) or, for fetches, in the
``X-CSRF-Token`` header.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web

from adapters.webconsole.pages import (
    COOKIE,
    SESSION_LIFETIME,
    ConsoleContext,
    Handler,
    Room,
    _query_tenant,
    _redirect,
    _safe_next,
)
from adapters.webconsole.people import Viewer
from bot.messages import say
from bot.team.access import Access
from storage.console_repo import ConsoleSession
from storage.knowledge_repo import GLOBAL

log = logging.getLogger(__name__)

LOGIN_COOKIE = "deskmate_console_login"
FAILED_SIGN_INS = 10  # a minute, per client address (behind a trusted proxy, the real one)


class SignIn(Room):
    """The sign-in form, signing out, and the session and CSRF checks that
    ``page`` and ``write`` put in front of every other handler."""

    def __init__(self, context: ConsoleContext) -> None:
        super().__init__(context)
        # Failed sign-ins per client address, so a token cannot be guessed online.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    async def _session(self, request: web.Request) -> ConsoleSession | None:
        token = request.cookies.get(COOKIE, "")
        if not token:
            return None
        return await self.repo.session(token)

    async def _viewer(self, person: str) -> Viewer:
        if not person:
            return Viewer("", owner=True)
        if self.team.is_owner(person):
            return Viewer(person, owner=True)
        return Viewer(person, owner=False, roles=await self.repo.roles_of(person))

    async def _admit(
        self, request: web.Request, session: ConsoleSession, level: Access | None
    ) -> web.StreamResponse | None:
        """Put the person and the tenant the request may show on ``request``,
        or the refusal when the person does not reach it at ``level`` (None:
        any signed-in person, as signing out)."""
        viewer = await self._viewer(session.platform_user)
        request["session"], request["viewer"] = session, viewer
        if level is None:
            return None
        reached = viewer.tenants(level)
        asked = request.query.get("tenant", "")
        if reached is None:
            request["tenant"], request["tenant_arg"] = _query_tenant(request), asked
            return None
        if not reached:
            if viewer.tenants(Access.AGENT) and request.path in ("/console", "/console/"):
                return _redirect("/console/tickets")
            needs = "an agent or admin" if level <= Access.AGENT else "an admin"
            return self._refusal(
                request,
                f"{viewer.person} is not {needs} of any tenant, so this page is closed to "
                "them. An admin gives roles with /role in the tenant's chat.",
            )
        tenant = _query_tenant(request) if asked else reached[0]
        if tenant == GLOBAL or tenant not in reached:
            language = self.language(request)
            shown = (
                say("console.auth.shared_entries", language)
                if tenant == GLOBAL
                else say("console.auth.tenant", language, tenant=asked)
            )
            return self._refusal(
                request, say("console.auth.may_not_see", language, person=viewer.person, what=shown)
            )
        request["tenant"], request["tenant_arg"] = tenant, tenant
        request["reached"] = reached
        return None

    def _refusal(self, request: web.Request, text: str) -> web.StreamResponse:
        log.warning("console: refused %s %s: %s", request.method, request.path, text)
        if request.method != "GET" or request.path.startswith("/console/api/"):
            return web.json_response({"error": text}, status=403)
        heading = say("console.not_yours_title", self.language(request))
        return self._render(request, "missing.html", status=403, text=text, heading=heading)

    def page(self, handler: Handler, level: Access = Access.ADMIN) -> Handler:
        """``handler`` for a signed-in person who reaches its tenant at ``level``;
        others are sent to sign in (APIs answer 401) or refused (403)."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            session = await self._session(request)
            if session is None:
                if request.path.startswith("/console/api/"):
                    return _secure(web.json_response({"error": "sign in first"}, status=401))
                target = quote(request.path_qs, safe="")
                return _secure(_redirect(f"/console/login?next={target}"))
            refused = await self._admit(request, session, level)
            return _secure(refused if refused is not None else await handler(request))

        return wrapped

    def write(self, handler: Handler, level: Access | None = Access.ADMIN) -> Handler:
        """``handler`` for a same-site request of a signed-in person who reaches
        its tenant at ``level`` and carries the session's CSRF token; its form
        is read into ``request["form"]`` (left empty for multipart uploads,
        which the handler reads itself)."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            session = await self._session(request)
            if session is None:
                return _secure(web.json_response({"error": "sign in first"}, status=401))
            if not _same_origin(request):
                return _secure(web.json_response({"error": "cross-site request"}, status=403))
            given = request.headers.get("X-CSRF-Token", "")
            form: Mapping[str, Any] = {}
            if request.content_type != "multipart/form-data":
                form = await request.post()
                given = given or str(form.get("csrf", ""))
            if not given or not hmac.compare_digest(given.encode(), session.csrf.encode()):
                return _secure(web.json_response({"error": "missing CSRF token"}, status=403))
            request["form"] = form
            refused = await self._admit(request, session, level)
            return _secure(refused if refused is not None else await handler(request))

        return wrapped

    def _refused(self, remote: str) -> bool:
        """Whether ``remote`` failed to sign in too often in the last minute."""
        failures = self._failures.get(remote)
        return (
            failures is not None
            and len(failures) >= FAILED_SIGN_INS
            and time.monotonic() - failures[0] < 60.0
        )

    async def login_page(self, request: web.Request, *, error: str = "") -> web.StreamResponse:
        pre = secrets.token_urlsafe(24)
        response = self._render(
            request,
            "login.html",
            status=401 if error else 200,
            login_csrf=pre,
            error=error,
            link_token=request.query.get("link", ""),
            shared_token=bool(self.settings.console_token),
            next=_safe_next(request.query.get("next", "")),
        )
        # Sign-in has no session yet: the form's token must match this cookie.
        response.set_cookie(
            LOGIN_COOKIE,
            pre,
            httponly=True,
            samesite="Strict",
            path="/console/login",
            secure=self.client(request).secure,
            max_age=3600,
        )
        return _secure(response)

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not _same_origin(request):
            return _secure(web.json_response({"error": "cross-site request"}, status=403))
        form = await request.post()
        pre = request.cookies.get(LOGIN_COOKIE, "")
        given = str(form.get("csrf", ""))
        if not pre or not hmac.compare_digest(pre.encode(), given.encode()):
            return _secure(web.json_response({"error": "missing CSRF token"}, status=403))
        client = self.client(request)
        remote = client.address
        if self._refused(remote):
            return _secure(
                web.json_response({"error": "too many failed sign-ins; wait a minute"}, status=429)
            )
        token, link = str(form.get("token", "")), str(form.get("link", ""))
        via, person = await self._identify(token, link)
        if via is None:
            self._failures.setdefault(remote, deque(maxlen=FAILED_SIGN_INS)).append(
                time.monotonic()
            )
            while len(self._failures) > 10_000:
                self._failures.popitem(last=False)
            log.warning("console: refused a sign-in from %s", remote)
            error = say(
                "console.auth.bad_link" if link else "console.auth.wrong_token",
                self.language(request),
            )
            return await self.login_page(request, error=error)
        viewer = await self._viewer(person)
        if not viewer.owner and not viewer.roles:
            log.warning("console: refused %s from %s: no role in any tenant", person, remote)
            return await self.login_page(
                request,
                error=say("console.auth.no_role", self.language(request), person=person),
            )
        session, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        await self.repo.create_session(
            session, csrf=csrf, via=via, valid_for=SESSION_LIFETIME, platform_user=person
        )
        log.info("console: %s signed in with a %s from %s", person or "the owner", via, remote)
        response = _redirect(_safe_next(str(form.get("next", ""))) or "/console")
        response.set_cookie(
            COOKIE,
            session,
            httponly=True,
            samesite="Strict",
            path="/console",
            secure=client.secure,
            max_age=int(SESSION_LIFETIME.total_seconds()),
        )
        response.del_cookie(LOGIN_COOKIE, path="/console/login")
        return _secure(response)

    async def _identify(self, token: str, link: str) -> tuple[str | None, str]:
        """How and as whom the form signs in: (via, person), via None when it
        does not; person "" is the owner's fallback."""
        if link:
            person = await self.repo.spend_link(link)
            return ("link", person) if person is not None else (None, "")
        if not token:
            return None, ""
        shared = self.settings.console_token
        if shared and hmac.compare_digest(token.encode(), shared.encode()):
            return "token", ""
        person = await self.repo.token_owner(token)
        return ("personal", person) if person else (None, "")

    async def logout(self, request: web.Request) -> web.StreamResponse:
        await self.repo.end_session(request.cookies.get(COOKIE, ""))
        response = _redirect("/console/login")
        response.del_cookie(COOKIE, path="/console")
        return response


def _secure(response: web.StreamResponse) -> web.StreamResponse:
    headers = response.headers
    headers.setdefault("Cache-Control", "no-store")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    # Sign-in links carry a secret in the address: never pass it to another site.
    # ("no-referrer" would also make browsers send "Origin: null" on our own forms.)
    headers.setdefault("Referrer-Policy", "same-origin")
    return response


def _same_origin(request: web.Request) -> bool:
    """False when the browser says the request came from another site."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return origin.split("://", 1)[-1] == request.host
