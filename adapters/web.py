"""The one HTTP server, and the local web chat it serves at ``/``.

Platform adapters add their routes (``/telegram/webhook``, ``/slack/events``)
before the server starts; ``/healthz`` reports whether the bot is serving.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any
from urllib.parse import quote

from aiohttp import web

from bot.errors import StorageError
from bot.throttle import TokenBuckets
from bot.types import (
    ConversationRef,
    Conversations,
    Inbound,
    Reply,
    TicketThread,
    Undeliverable,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Ids the browser makes up; anything else is refused before it reaches storage.
_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_BODY = 256 * 1024
COOKIE = "deskmate_web"
HEALTH_TIMEOUT = 2.0
# The buttons of a streamed reply, known when it starts: a JSON list of
# {"label", "command"}, percent-encoded (a header carries Latin-1 only).
BUTTONS_HEADER = "X-Deskmate-Buttons"


def buttons_json(buttons: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"label": label, "command": command} for label, command in buttons]


class HttpServer:
    """aiohttp application on ``host:port``; add routes, then ``start``."""

    def __init__(self, *, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.app = web.Application(client_max_size=MAX_BODY)
        self.ready = False
        # What /healthz checks besides readiness, e.g. {"database": ping}.
        self.checks: dict[str, Callable[[], Awaitable[object]]] = {}
        self._runner: web.AppRunner | None = None
        self.add_route("GET", "/healthz", self._healthz)

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        self.app.router.add_route(method, path, handler)

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        # With port 0 the OS picks one; report the real one.
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("HTTP server listening on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        """200 once serving and every check passes; 503 with the failing part otherwise."""
        if not self.ready:
            return web.json_response({"status": "starting"}, status=503)
        body: dict[str, str] = {"status": "ok"}
        for name, check in self.checks.items():
            try:
                async with asyncio.timeout(HEALTH_TIMEOUT):
                    await check()
                body[name] = "ok"
            # Whatever a check raises, /healthz answers and names the failing part.
            except Exception as exc:
                log.warning("health check %s failed: %s", name, exc)
                body[name] = "unavailable"
                body["status"] = "degraded"
        return web.json_response(body, status=200 if body["status"] == "ok" else 503)


class SessionThrottle(TokenBuckets):
    """Messages per browser session: 10 a minute unless told otherwise."""

    def __init__(self, *, rate: int = 10, per: float = 60.0, capacity: int = 10_000) -> None:
        super().__init__(rate=rate, per=per, capacity=capacity)


class WebChat:
    """The local chat page: each browser tab is one conversation.

    Answers stream back as chunked plain text, their buttons in the
    ``X-Deskmate-Buttons`` header. Messages sent to a page outside a reply
    (``send``, ``post``) wait in a small per-conversation queue the page polls.
    With ``token`` set, the page and its API need it: once as ``?token=`` on
    the page (kept in an HttpOnly cookie) or as ``Authorization: Bearer``.
    """

    name = "web"

    def __init__(
        self,
        *,
        http: HttpServer,
        tenant: str = "local",
        token: str = "",
        throttle: SessionThrottle | None = None,
    ) -> None:
        self.tenant = tenant
        self._token = token
        self._throttle = throttle if throttle is not None else SessionThrottle()
        self._conversations: Conversations | None = None
        self._outbox: defaultdict[str, deque[dict[str, Any]]] = defaultdict(
            lambda: deque(maxlen=100)
        )
        http.add_route("GET", "/", self._page)
        http.add_route("POST", "/api/chat", self._chat)
        http.add_route("GET", "/api/outbox", self._poll_outbox)

    async def start(self, conversations: Conversations) -> None:
        self._conversations = conversations

    async def stop(self) -> None:
        self._conversations = None

    async def send(self, ref: ConversationRef, text: str) -> None:
        self._outbox[ref.chat].append({"text": text, "buttons": []})

    async def post(
        self,
        ref: ConversationRef,
        text: str,
        *,
        reply_to: str = "",
        buttons: Sequence[tuple[str, str]] = (),
    ) -> str:
        """A message for the page outside a reply (a person's answer, a notice),
        with buttons the page shows under it."""
        self._outbox[ref.chat].append({"text": text, "buttons": buttons_json(buttons)})
        return ""

    async def open_ticket(
        self, space: ConversationRef, *, title: str, text: str, ticket_id: int
    ) -> TicketThread:
        raise Undeliverable("the web chat is not a support space")

    def _allowed(self, request: web.Request) -> bool:
        if not self._token:
            return True
        given = request.cookies.get(COOKIE, "")
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header.removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), self._token.encode())

    async def _page(self, request: web.Request) -> web.StreamResponse:
        offered = request.query.get("token", "")
        if self._token and offered:
            if not hmac.compare_digest(offered.encode(), self._token.encode()):
                return web.Response(status=401, text="wrong token")
            # Into a cookie, and off the address bar (and out of its history).
            moved = web.HTTPSeeOther("/")
            moved.set_cookie(COOKIE, offered, httponly=True, samesite="Strict")
            raise moved
        if not self._allowed(request):
            return web.Response(status=401, text="This chat needs its access link (/?token=...).\n")
        html = resources.files("adapters").joinpath("static/chat.html").read_text("utf-8")
        return web.Response(text=html, content_type="text/html", charset="utf-8")

    async def _poll_outbox(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            return web.json_response({"error": "token required"}, status=401)
        session = request.query.get("session", "")
        if not _ID.match(session):
            return web.json_response({"error": "bad session id"}, status=400)
        queue = self._outbox.get(session)
        entries = list(queue) if queue else []
        if queue:
            queue.clear()
        # ``messages``: the texts alone, as before buttons, for clients that know no more.
        return web.json_response({"messages": [e["text"] for e in entries], "entries": entries})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        conversations = self._conversations
        if conversations is None:
            return web.json_response({"error": "Deskmate is starting, try again"}, status=503)
        if not self._allowed(request):
            return web.json_response({"error": "token required"}, status=401)
        if request.content_type != "application/json":
            return web.json_response({"error": "send JSON (application/json)"}, status=415)
        try:
            body = await request.json()
        # LookupError: the request declared a charset Python does not know.
        except (json.JSONDecodeError, UnicodeDecodeError, LookupError):
            return web.json_response({"error": "body must be JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        session, text = body.get("session"), body.get("text")
        message_id = body.get("message_id") or uuid.uuid4().hex
        if not isinstance(session, str) or not _ID.match(session):
            return web.json_response({"error": "session must be 8-64 letters/digits"}, status=400)
        if not isinstance(message_id, str) or not _ID.match(message_id):
            return web.json_response(
                {"error": "message_id must be 8-64 letters/digits"}, status=400
            )
        if not isinstance(text, str):
            return web.json_response({"error": "text must be a string"}, status=400)
        wait = self._throttle.take(session)
        if wait:
            return web.json_response(
                {"error": "too many messages; wait a moment"},
                status=429,
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        inbound = Inbound(
            ref=ConversationRef("web", self.tenant, session),
            user=session,
            text=text,
            event_id=f"{session}:{message_id}",
            user_name="web user",
        )
        try:
            accepted = await conversations.accept(inbound)
        except StorageError:
            log.exception("web chat: could not store message")
            return web.json_response({"error": "could not store your message"}, status=503)
        if accepted.duplicate:
            return web.json_response({"duplicate": True}, status=409)

        response = web.StreamResponse(
            headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache"}
        )

        async def render(reply: Reply) -> None:
            # Headers go out when the reply starts, so its buttons are known by then.
            if reply.buttons and not response.prepared:
                encoded = quote(json.dumps(buttons_json(reply.buttons)), safe="")
                response.headers[BUTTONS_HEADER] = encoded
            if not response.prepared:
                await response.prepare(request)
            async for chunk in reply:
                await response.write(chunk.encode("utf-8"))

        try:
            await conversations.process(accepted, render)
        except (ConnectionResetError, asyncio.CancelledError):
            # The tab closed mid-answer; the manager already recorded it as failed.
            log.info("web chat: client went away during answer %s", accepted.inbound_id)
            raise
        if not response.prepared:
            await response.prepare(request)  # handled without a reply: an empty answer
        await response.write_eof()
        return response
