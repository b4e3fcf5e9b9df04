"""The one HTTP server, and the local web chat it serves at ``/``.

Platform adapters add their routes (``/telegram/webhook``, ``/slack/events``)
before the server starts; ``/healthz`` reports whether the bot is serving.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import re
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from urllib.parse import quote

from aiohttp import web

from adapters.clients import client_of
from adapters.visitors import COOKIE as VISITOR_COOKIE
from adapters.visitors import HEADER as VISITOR_HEADER
from adapters.visitors import Visitor, VisitorKeys
from bot.errors import StorageError
from bot.language import accepted_language
from bot.messages import say
from bot.settings import IPNetwork
from bot.throttle import TokenBuckets
from bot.types import (
    Accepted,
    ConversationRef,
    Conversations,
    Inbound,
    Reply,
    Retraction,
    TicketThread,
    Undeliverable,
)
from storage.web_repo import WebRepository

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Ids the browser makes up (its conversations, its messages); anything else
# is refused before it reaches storage.
_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_BODY = 256 * 1024
# The access token (DESKMATE_WEB_TOKEN), once given as ?token=.
TOKEN_COOKIE = "deskmate_web"
# A visitor's identity outlives browser restarts (browsers cap it near 400 days).
VISITOR_LIFETIME = 400 * 24 * 3600
# Messages a minute from one client address, however many visitors it claims to be.
PER_ADDRESS = 60
# Headers a reverse proxy adds: a request carrying one did not start on this machine.
_FORWARDING = ("X-Forwarded-For", "Forwarded", "X-Real-IP", "X-Forwarded-Host")
HEALTH_TIMEOUT = 2.0
# The buttons of a streamed reply, known when it starts: a JSON list of
# {"label", "command"}, percent-encoded (a header carries Latin-1 only).
BUTTONS_HEADER = "X-Deskmate-Buttons"
# In a streamed answer, the text after this character replaces everything
# before it (an answer taken back: ``bot.types.Retraction``); it is never
# part of an answer's own text.
RETRACT = "\f"


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
        # What /healthz reports besides, without deciding its status, e.g. a warm-up state.
        self.facts: dict[str, Callable[[], str]] = {}
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
        for name, fact in self.facts.items():
            body[name] = fact()
        return web.json_response(body, status=200 if body["status"] == "ok" else 503)


class SessionThrottle(TokenBuckets):
    """Messages per visitor (or per client address): 10 a minute unless told otherwise."""

    def __init__(self, *, rate: int = 10, per: float = 60.0, capacity: int = 10_000) -> None:
        super().__init__(rate=rate, per=per, capacity=capacity)


class FailedAttempts:
    """Wrong access tokens per client address: after ``limit`` in ``per``
    seconds, that address is refused until the oldest is ``per`` seconds old."""

    def __init__(self, *, limit: int = 10, per: float = 60.0, capacity: int = 10_000) -> None:
        self.limit = limit
        self.per = per
        self.capacity = capacity
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, address: str, now: float | None = None) -> float:
        """0 when ``address`` may try; else the seconds until it may again."""
        now = time.monotonic() if now is None else now
        failures = self._seen.get(address)
        if failures is None or len(failures) < self.limit:
            return 0.0
        return max(0.0, failures[0] + self.per - now)

    def failed(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        failures = self._seen.pop(address, None) or deque(maxlen=self.limit)
        failures.append(now)
        self._seen[address] = failures
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)


class WebChat:
    """The local chat page and its API.

    Every call is bound to a visitor identity the server issued and signed
    (``adapters.visitors``): the page keeps it in an HttpOnly cookie, other
    clients send it in the ``X-Deskmate-Visitor`` header. A message without a
    valid one starts a new visitor (the answer carries the new identity, as a
    cookie and in that header); polling for messages needs one (401). Each of a
    visitor's conversations is one of their pages' ``session``s. Messages
    sent outside a reply (``send``, ``post``) wait in the database until the
    visitor's page polls, on whichever worker.

    Answers stream back as chunked plain text, their buttons in the
    ``X-Deskmate-Buttons`` header. With ``token`` set, the page and its API
    need it: once as ``?token=`` on the page (kept in an HttpOnly cookie) or
    as ``Authorization: Bearer``; wrong tokens are limited per client address.
    Without it, only requests made on this machine are served: one that came
    through a proxy (it carries forwarding headers, or comes from one of
    ``trusted``) is refused. Messages are limited per visitor and, since a
    new identity costs nothing, per client address too (behind the
    ``trusted`` proxies, the address they name).
    """

    name = "web"

    def __init__(
        self,
        *,
        http: HttpServer,
        store: WebRepository,
        tenant: str = "local",
        token: str = "",
        secret_key: str = "",
        trusted: Sequence[IPNetwork] = (),
        throttle: SessionThrottle | None = None,
        address_throttle: SessionThrottle | None = None,
        failures: FailedAttempts | None = None,
    ) -> None:
        self.tenant = tenant
        self._store = store
        self._token = token
        self._secret_key = secret_key
        self._trusted = tuple(trusted)
        self._throttle = throttle if throttle is not None else SessionThrottle()
        self._per_address = (
            address_throttle if address_throttle is not None else SessionThrottle(rate=PER_ADDRESS)
        )
        self._failures = failures if failures is not None else FailedAttempts()
        self._keys: VisitorKeys | None = None
        self._conversations: Conversations | None = None
        self._told: set[str] = set()  # addresses the operator heard about, once each
        http.add_route("GET", "/", self._page)
        http.add_route("POST", "/api/chat", self._chat)
        http.add_route("GET", "/api/outbox", self._poll_outbox)

    async def start(self, conversations: Conversations) -> None:
        stored = await self._store.signing_key()
        self._keys = VisitorKeys.of(configured=self._secret_key, stored=stored)
        self._conversations = conversations
        if not self._token and self._trusted:
            log.warning(
                "web chat: DESKMATE_TRUSTED_PROXIES is set but DESKMATE_WEB_TOKEN is not: the "
                "chat answers browsers on this machine only, and refuses what the proxies pass on"
            )

    async def stop(self) -> None:
        self._conversations = None

    async def send(self, ref: ConversationRef, text: str) -> None:
        await self.post(ref, text)

    async def post(
        self,
        ref: ConversationRef,
        text: str,
        *,
        reply_to: str = "",
        buttons: Sequence[tuple[str, str]] = (),
    ) -> str:
        """A message for the visitor's page outside a reply (a person's answer,
        a notice), with buttons the page shows under it; kept until it polls."""
        visitor = ref.chat.partition(".")[0]
        await self._store.put(visitor=visitor, chat=ref.chat, text=text, buttons=buttons)
        return ""

    async def open_ticket(
        self, space: ConversationRef, *, title: str, text: str, ticket_id: int
    ) -> TicketThread:
        raise Undeliverable("the web chat is not a support space")

    # -- access ----------------------------------------------------------------------

    def _refusal(self, request: web.Request, *, page: bool = False) -> web.Response | None:
        """Why ``request`` may not use the chat (a response to send), or None."""
        client = client_of(request, self._trusted)
        if not self._token:
            if _on_this_machine(request, self._trusted):
                return None
            self._tell_once(
                client.address,
                "web chat: refused a request from %s: it came through a proxy or from another "
                "machine, and without DESKMATE_WEB_TOKEN the chat is for this machine only",
            )
            return _error(say("web.local_only", _language(request)), 403, page=page)
        if _forwarded(request) and not _trusted_peer(request, self._trusted):
            self._tell_once(
                client.address,
                "web chat: requests from %s carry a proxy's headers, but it is not in "
                "DESKMATE_TRUSTED_PROXIES: all its clients share one address's limits",
            )
        wait = self._failures.wait(client.address)
        if wait:
            return _error(
                say("web.too_many_tokens", _language(request)), 429, page=page, retry_after=wait
            )
        given = request.cookies.get(TOKEN_COOKIE, "")
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header.removeprefix("Bearer ").strip()
        if not given:
            return _error(say("web.token_needed", _language(request)), 401, page=page)
        if hmac.compare_digest(given.encode(), self._token.encode()):
            return None
        self._wrong_token(client.address)
        return _error(say("web.token_needed", _language(request)), 401, page=page)

    def _wrong_token(self, address: str) -> None:
        self._failures.failed(address)
        log.warning("web chat: wrong access token from %s", address)

    def _tell_once(self, address: str, message: str) -> None:
        if address not in self._told and len(self._told) < 1000:
            self._told.add(address)
            log.warning(message, address)

    def _visitor(self, request: web.Request) -> Visitor | None:
        """The visitor the request proves it is (header first, then cookie)."""
        assert self._keys is not None
        for given in (request.headers.get(VISITOR_HEADER), request.cookies.get(VISITOR_COOKIE)):
            if given:
                found = self._keys.check(given)
                if found is not None:
                    return found
        return None

    def _remember(self, request: web.Request, response: web.StreamResponse, who: Visitor) -> None:
        """Hand a new identity to the client: a cookie for the page, the header
        for clients that keep it themselves."""
        if not who.fresh:
            return
        response.headers[VISITOR_HEADER] = who.token
        response.set_cookie(
            VISITOR_COOKIE,
            who.token,
            httponly=True,
            # Lax: sent when a link opens the page, never with another site's requests.
            samesite="Lax",
            secure=client_of(request, self._trusted).secure,
            max_age=VISITOR_LIFETIME,
        )

    # -- routes ----------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.StreamResponse:
        if self._keys is None:
            return web.Response(status=503, text=say("web.starting", _language(request)) + "\n")
        offered = request.query.get("token", "")
        if self._token and offered:
            return self._enter_with(request, offered)
        refusal = self._refusal(request, page=True)
        if refusal is not None:
            return refusal
        html = resources.files("adapters").joinpath("static/chat.html").read_text("utf-8")
        response = web.Response(text=html, content_type="text/html", charset="utf-8")
        response.headers["Cache-Control"] = "no-store"
        self._remember(request, response, self._visitor(request) or self._keys.issue())
        return response

    def _enter_with(self, request: web.Request, offered: str) -> web.StreamResponse:
        """``/?token=``: the token into a cookie and off the address bar (and
        out of its history), or 401 (429 after too many wrong ones)."""
        client = client_of(request, self._trusted)
        wait = self._failures.wait(client.address)
        if wait:
            return _error(
                say("web.too_many_tokens", _language(request)), 429, page=True, retry_after=wait
            )
        if not hmac.compare_digest(offered.encode(), self._token.encode()):
            self._wrong_token(client.address)
            return web.Response(status=401, text=say("web.wrong_token", _language(request)) + "\n")
        moved = web.HTTPSeeOther("/")
        moved.set_cookie(
            TOKEN_COOKIE, offered, httponly=True, samesite="Strict", secure=client.secure
        )
        raise moved

    async def _poll_outbox(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        if self._keys is None:
            return _error(say("web.starting", _language(request)), 503)
        who = self._visitor(request)
        if who is None:
            return _error(say("web.who_are_you", _language(request)), 401)
        try:
            waiting = await self._store.take(who.id)
        except StorageError:
            log.exception("web chat: could not read the messages waiting for a visitor")
            return _error(say("web.storage_down", _language(request)), 503)
        entries = [
            {
                "text": m.text,
                "buttons": buttons_json(m.buttons),
                "session": m.chat.partition(".")[2],
            }
            for m in waiting
        ]
        # ``messages``: the texts alone, as before buttons, for clients that know no more.
        return web.json_response({"messages": [e["text"] for e in entries], "entries": entries})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        conversations = self._conversations
        if conversations is None or self._keys is None:
            return _error(say("web.starting", _language(request)), 503)
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        message = await _read_message(request)
        if isinstance(message, web.Response):
            return message
        session, text, message_id = message
        who = self._visitor(request) or self._keys.issue()
        wait = self._throttle.take(who.id) or self._per_address.take(
            client_of(request, self._trusted).address
        )
        if wait:
            refused = _error(say("web.too_fast", _language(request)), 429, retry_after=wait)
            self._remember(request, refused, who)
            return refused
        chat = f"{who.id}.{session}" if session else who.id
        inbound = Inbound(
            ref=ConversationRef("web", self.tenant, chat),
            user=who.id,
            text=text,
            event_id=f"{who.id}:{message_id}",
            user_name="web user",
        )
        try:
            accepted = await conversations.accept(inbound)
        except StorageError:
            log.exception("web chat: could not store message")
            return _error(say("web.not_stored", _language(request)), 503)
        if accepted.duplicate:
            return web.json_response({"duplicate": True}, status=409)
        response = web.StreamResponse(
            headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache"}
        )
        self._remember(request, response, who)
        await self._answer(request, response, conversations, accepted)
        return response

    async def _answer(
        self,
        request: web.Request,
        response: web.StreamResponse,
        conversations: Conversations,
        accepted: Accepted,
    ) -> None:
        """Stream the answer to ``accepted`` into ``response``."""

        async def render(reply: Reply) -> None:
            # Headers go out when the reply starts, so its buttons are known by then.
            if reply.buttons and not response.prepared:
                encoded = quote(json.dumps(buttons_json(reply.buttons)), safe="")
                response.headers[BUTTONS_HEADER] = encoded
            if not response.prepared:
                await response.prepare(request)
            async for chunk in reply:
                text = chunk.replace(RETRACT, "")
                if isinstance(chunk, Retraction):
                    text = RETRACT + text
                await response.write(text.encode("utf-8"))

        try:
            await conversations.process(accepted, render)
        except (ConnectionResetError, asyncio.CancelledError):
            # The tab closed mid-answer; the manager already recorded it as failed.
            log.info("web chat: client went away during answer %s", accepted.inbound_id)
            raise
        if not response.prepared:
            await response.prepare(request)  # handled without a reply: an empty answer
        await response.write_eof()


def _language(request: web.Request) -> str:
    """The language the browser asks for (``Accept-Language``: ``de-AT`` → ``de``),
    for the chat's HTTP errors; English when it names none Deskmate ships."""
    return accepted_language(request.headers.get("Accept-Language", ""))


async def _read_message(request: web.Request) -> tuple[str, str, str] | web.Response:
    """``(session, text, message_id)`` from a chat request's JSON body, or the
    400/415 that says what is wrong with it."""
    if request.content_type != "application/json":
        return _error(say("web.send_json", _language(request)), 415)
    try:
        body = await request.json()
    # LookupError: the request declared a charset Python does not know.
    except (json.JSONDecodeError, UnicodeDecodeError, LookupError):
        return _error(say("web.body_not_json", _language(request)), 400)
    if not isinstance(body, dict):
        return _error(say("web.body_not_object", _language(request)), 400)
    session, text = body.get("session") or "", body.get("text")
    message_id = body.get("message_id") or uuid.uuid4().hex
    if not isinstance(session, str) or (session and not _ID.match(session)):
        return _error(say("web.bad_session", _language(request)), 400)
    if not isinstance(message_id, str) or not _ID.match(message_id):
        return _error(say("web.bad_message_id", _language(request)), 400)
    if not isinstance(text, str):
        return _error(say("web.bad_text", _language(request)), 400)
    return session, text, message_id


def _on_this_machine(request: web.Request, trusted: Sequence[IPNetwork]) -> bool:
    """Whether ``request`` came straight from this machine: a loopback peer
    that is no trusted proxy, and no proxy's forwarding headers."""
    if _forwarded(request):
        return False
    return client_of(request, ()).loopback and not _trusted_peer(request, trusted)


def _forwarded(request: web.Request) -> bool:
    """Whether a proxy passed ``request`` on (as its headers say)."""
    return any(name in request.headers for name in _FORWARDING)


def _trusted_peer(request: web.Request, trusted: Sequence[IPNetwork]) -> bool:
    """Whether the connection comes from one of the ``trusted`` proxies."""
    try:
        address = ipaddress.ip_address(client_of(request, ()).address)
    except ValueError:
        return False
    return any(address in network for network in trusted)


def _error(
    text: str, status: int, *, page: bool = False, retry_after: float | None = None
) -> web.Response:
    """The refusal: plain text for the page, JSON ``{"error"}`` for the API."""
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    if page:
        return web.Response(status=status, text=text + "\n", headers=headers)
    return web.json_response({"error": text}, status=status, headers=headers)
