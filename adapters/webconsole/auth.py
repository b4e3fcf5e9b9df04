"""Signing in to the console, its sessions and the guards on every page and write.

Signing in: ``DESKMATE_CONSOLE_TOKEN`` typed into the sign-in form, or a
one-time link from ``deskmate console link`` (stored hashed, spent on use,
expiring). Either starts a session: a random cookie (HttpOnly, SameSite=Strict,
path /console) whose hash is stored with the session's CSRF token. Every page
and API needs the session; every write needs the CSRF token as well, in the
form (``csrf``) or, for fetches, in the ``X-CSRF-Token`` header.
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
    _redirect,
    _safe_next,
)
from storage.console_repo import ConsoleSession

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

    def page(self, handler: Handler) -> Handler:
        """``handler`` for a signed-in session only; others are sent to sign in
        (APIs answer 401)."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            session = await self._session(request)
            if session is None:
                if request.path.startswith("/console/api/"):
                    return _secure(web.json_response({"error": "sign in first"}, status=401))
                target = quote(request.path_qs, safe="")
                return _secure(_redirect(f"/console/login?next={target}"))
            request["session"] = session
            return _secure(await handler(request))

        return wrapped

    def write(self, handler: Handler) -> Handler:
        """``handler`` for a same-site request of a signed-in session that
        carries the session's CSRF token; its form is read into ``request["form"]``
        (left empty for multipart uploads, which the handler reads itself)."""

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
            request["session"] = session
            request["form"] = form
            return _secure(await handler(request))

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
            token_enabled=bool(self.settings.console_token),
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
        via = ""
        if link and await self.repo.use_link(link):
            via = "link"
        elif (
            token
            and self.settings.console_token
            and hmac.compare_digest(token.encode(), self.settings.console_token.encode())
        ):
            via = "token"
        if not via:
            self._failures.setdefault(remote, deque(maxlen=FAILED_SIGN_INS)).append(
                time.monotonic()
            )
            while len(self._failures) > 10_000:
                self._failures.popitem(last=False)
            log.warning("console: refused a sign-in from %s", remote)
            error = (
                "That sign-in link is used up, expired or wrong. Print a new one with "
                "`deskmate console link`."
                if link
                else "Wrong token."
            )
            return await self.login_page(request, error=error)
        session, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        await self.repo.create_session(session, csrf=csrf, via=via, valid_for=SESSION_LIFETIME)
        log.info("console: signed in with a %s from %s", via, remote)
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
