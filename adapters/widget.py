"""The website chat widget: ``/widget.js`` and the API it calls.

A site's page loads ``<script src=".../widget.js" data-site="KEY">``; the
script asks ``/widget/api/config`` for the site's look and texts, then talks
to ``/widget/api/chat`` (answers streamed as server-sent events, rendered by
the shared progressive renderer), ``/widget/api/outbox`` (messages that wait
for the visitor: an agent's answers, notices) and ``/widget/api/email``.
Every API call names its site (``?site=``) and must come from one of the
site's origins: the ``Origin`` header is checked on every request, and CORS
headers are given to those origins only, so a page elsewhere gets nothing.

A visitor is the server-issued, signed identity of ``adapters.visitors``,
signed for one site (a token of one site is refused on another) and kept in
the site's ``localStorage``; a page that knows its signed-in user passes its
id and the site's HMAC of it instead, and the conversation follows that user.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from aiohttp import web

from adapters.clients import client_of
from adapters.common.render import EditPacer, StreamRenderer
from adapters.visitors import HEADER as VISITOR_HEADER
from adapters.visitors import Visitor, VisitorKeys
from adapters.web import HttpServer, buttons_json
from bot.errors import StorageError
from bot.messages import say
from bot.settings import IPNetwork
from bot.throttle import TokenBuckets
from bot.types import (
    Accepted,
    ConversationRef,
    Conversations,
    Inbound,
    Reply,
    TicketThread,
    Undeliverable,
)
from bot.widget_sites import WidgetSites, user_hash_valid
from storage.web_repo import WebRepository
from storage.widget_repo import WidgetSite

log = logging.getLogger(__name__)

USER_HEADER = "X-Deskmate-User"
USER_HASH_HEADER = "X-Deskmate-User-Hash"
LANGUAGE_HEADER = "X-Deskmate-Language"
_ALLOWED_HEADERS = ", ".join(
    ("Content-Type", VISITOR_HEADER, USER_HEADER, USER_HASH_HEADER, LANGUAGE_HEADER)
)
_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_SITE = re.compile(r"^[A-Za-z0-9_-]{4,40}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")
_EMAIL = re.compile(r"^[^@\s<>\"']{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,24}$")
MAX_CHARS = 4000
MAX_USER = 128
# How long a site's settings are reused before they are read again: a site
# revoked in the console or the CLI is refused everywhere within this time.
SITE_TTL = 5.0
_PURPOSE = b"deskmate widget visitor "
_EVENTS = "text/event-stream; charset=utf-8"


class WidgetChat:
    """The widget's routes, and the ``widget`` channel agents' answers reach visitors by.

    ``visitor_rate`` messages a minute per visitor, ``site_rate`` per site and
    ``address_rate`` per client address (a new identity costs nothing);
    ``max_chars`` per message. ``is_open`` tells whether the support team
    is in now (outside its hours the visitor may leave an email address).
    """

    name = "widget"

    def __init__(
        self,
        *,
        http: HttpServer,
        sites: WidgetSites,
        store: WebRepository,
        secret_key: str = "",
        trusted: Sequence[IPNetwork] = (),
        visitor_rate: int = 10,
        site_rate: int = 600,
        address_rate: int = 60,
        max_chars: int = MAX_CHARS,
        is_open: Callable[[datetime], bool] | None = None,
        edit_interval: float = 0.05,
        site_ttl: float = SITE_TTL,
    ) -> None:
        self._sites = sites
        self._store = store
        self._secret_key = secret_key
        self._trusted = tuple(trusted)
        self._per_visitor = TokenBuckets(rate=visitor_rate)
        self._per_site = TokenBuckets(rate=site_rate)
        self._per_address = TokenBuckets(rate=address_rate)
        self.max_chars = max_chars
        self._is_open = is_open
        self._pacer = EditPacer(edit_interval)
        self._site_ttl = site_ttl
        self._cache: dict[str, tuple[WidgetSite | None, float]] = {}
        self._keys: dict[str, VisitorKeys] = {}
        self._stored_key = ""
        self._conversations: Conversations | None = None
        self._told: set[str] = set()
        self._script = resources.files("adapters").joinpath("static/widget.js").read_bytes()
        http.add_route("GET", "/widget.js", self._widget_js)
        for route in ("config", "chat", "outbox", "email", "history"):
            http.add_route("OPTIONS", f"/widget/api/{route}", self._preflight)
        http.add_route("GET", "/widget/api/config", self._config)
        http.add_route("POST", "/widget/api/chat", self._chat)
        http.add_route("GET", "/widget/api/outbox", self._outbox)
        http.add_route("POST", "/widget/api/email", self._email)
        http.add_route("GET", "/widget/api/history", self._history)

    async def start(self, conversations: Conversations) -> None:
        self._stored_key = await self._store.signing_key()
        self._conversations = conversations

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
        """A message for the visitor outside a reply, kept in the database
        until their page (on this device or another) polls, on any worker."""
        await self._store.put(visitor=ref.chat, chat=ref.chat, text=text, buttons=buttons)
        return ""

    async def open_ticket(
        self, space: ConversationRef, *, title: str, text: str, ticket_id: int
    ) -> TicketThread:
        raise Undeliverable("the website widget is not a support space")

    # -- who is asking -----------------------------------------------------------------

    async def _site(self, key: str) -> WidgetSite | None:
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        site = await self._sites.site(key)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (site, now + self._site_ttl)
        return site

    async def _allowed(self, request: web.Request) -> tuple[WidgetSite, str] | web.Response:
        """The site the request names and its page's origin, or the refusal:
        404 for no such site, 403 for an origin not on its list (without CORS
        headers, so the page cannot even read why)."""
        language = _language(request)
        key = request.query.get("site", "")
        site = None
        if _SITE.match(key):
            try:
                site = await self._site(key)
            except StorageError:
                log.exception("widget: could not read site %s", key)
                return _refuse(say("web.storage_down", language), 503)
        if site is None:
            return _refuse(say("widget.no_site", language), 404)
        origin = request.headers.get("Origin", "")
        if origin not in site.origins:
            self._tell_once(
                f"{key} {origin}",
                f"widget: refused a request for site {key} from origin {origin or '(none)'}: "
                "it is not on the site's list (deskmate widget list)",
            )
            return _refuse(say("widget.origin_refused", language), 403)
        return site, origin

    def _visitor_keys(self, site: WidgetSite) -> VisitorKeys:
        keys = self._keys.get(site.key)
        if keys is None:
            keys = VisitorKeys.of(
                configured=self._secret_key,
                stored=self._stored_key,
                purpose=_PURPOSE + site.key.encode(),
            )
            self._keys[site.key] = keys
        return keys

    def _person(
        self, request: web.Request, site: WidgetSite, *, issue: bool
    ) -> tuple[str, str, Visitor | None] | str:
        """``(person id, name, fresh identity or None)``, or the key of the
        refusal: a signed-in user whose hash does not match, no identity of
        this site (with ``issue`` a new visitor is made instead)."""
        user = request.headers.get(USER_HEADER, "").strip()
        if user:
            given = request.headers.get(USER_HASH_HEADER, "")
            if len(user) > MAX_USER or not user_hash_valid(site, user, given):
                return "widget.bad_user"
            digest = hashlib.sha256(f"{site.key}\0{user}".encode()).hexdigest()
            return "u" + digest[:31], user, None
        keys = self._visitor_keys(site)
        token = request.headers.get(VISITOR_HEADER, "")
        visitor = keys.check(token) if token else None
        if visitor is not None:
            return visitor.id, "", None
        if not issue:
            return "widget.who_are_you"
        fresh = keys.issue()
        return fresh.id, "", fresh

    def _tell_once(self, key: str, message: str) -> None:
        if key not in self._told and len(self._told) < 1000:
            self._told.add(key)
            log.warning(message)

    # -- routes ------------------------------------------------------------------------

    async def _widget_js(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._script,
            content_type="application/javascript",
            charset="utf-8",
            headers={
                "Cache-Control": "public, max-age=300",
                # Pages that isolate themselves (COEP) may still load it.
                "Cross-Origin-Resource-Policy": "cross-origin",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def _preflight(self, request: web.Request) -> web.Response:
        allowed = await self._allowed(request)
        if isinstance(allowed, web.Response):
            return allowed
        _, origin = allowed
        response = web.Response(status=204)
        _cors(response, origin)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST"
        response.headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
        return response

    async def _config(self, request: web.Request) -> web.Response:
        allowed = await self._allowed(request)
        if isinstance(allowed, web.Response):
            return allowed
        site, origin = allowed
        language = _language(request)
        who = self._person(request, site, issue=True)
        if isinstance(who, str):
            return _refuse(say(who, language), 403, origin=origin)
        _, _, fresh = who
        look = site.look
        body: dict[str, Any] = {
            "site": site.key,
            "title": look.title,
            "color": look.color,
            "position": look.position,
            "greeting": look.greeting or say("widget.greeting", language),
            "open": self._is_open is None or self._is_open(datetime.now(UTC)),
            "max_chars": self.max_chars,
            "language": language,
            "texts": _texts(language),
        }
        if fresh is not None:
            body["visitor"] = fresh.token
        response = web.json_response(body, headers={"Cache-Control": "no-store"})
        _cors(response, origin)
        return response

    async def _outbox(self, request: web.Request) -> web.Response:
        allowed = await self._allowed(request)
        if isinstance(allowed, web.Response):
            return allowed
        site, origin = allowed
        language = _language(request)
        who = self._person(request, site, issue=False)
        if isinstance(who, str):
            return _refuse(say(who, language), 401, origin=origin)
        person, _, _ = who
        try:
            waiting = await self._store.take(f"{site.key}.{person}")
        except StorageError:
            log.exception("widget: could not read the messages waiting for a visitor")
            return _refuse(say("web.storage_down", language), 503, origin=origin)
        entries = [{"text": m.text, "buttons": buttons_json(m.buttons)} for m in waiting]
        response = web.json_response({"entries": entries}, headers={"Cache-Control": "no-store"})
        _cors(response, origin)
        return response

    async def _history(self, request: web.Request) -> web.Response:
        """The conversation's questions and answers so far, for a panel that
        has none kept (a signed-in user's new device, a cleared browser)."""
        allowed = await self._allowed(request)
        if isinstance(allowed, web.Response):
            return allowed
        site, origin = allowed
        language = _language(request)
        who = self._person(request, site, issue=False)
        if isinstance(who, str):
            return _refuse(say(who, language), 401, origin=origin)
        person, _, _ = who
        ref = ConversationRef("widget", site.tenant, f"{site.key}.{person}")
        try:
            turns = await self._sites.transcript(ref)
        except StorageError:
            log.exception("widget: could not read a conversation")
            return _refuse(say("web.storage_down", language), 503, origin=origin)
        body = {"messages": [{"role": role, "text": text} for role, text in turns]}
        response = web.json_response(body, headers={"Cache-Control": "no-store"})
        _cors(response, origin)
        return response

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._message(request, email=False)

    async def _email(self, request: web.Request) -> web.StreamResponse:
        return await self._message(request, email=True)

    async def _message(self, request: web.Request, *, email: bool) -> web.StreamResponse:
        """A visitor's message (or the email address they leave for the
        team, which goes into their conversation and so into its ticket)."""
        allowed = await self._allowed(request)
        if isinstance(allowed, web.Response):
            return allowed
        site, origin = allowed
        language = _language(request)
        conversations = self._conversations
        if conversations is None:
            return _refuse(say("web.starting", language), 503, origin=origin)
        body = await _read_body(request, language)
        if isinstance(body, str):
            return _refuse(body, 400, origin=origin)
        text, message_id = body
        if email:
            if not _EMAIL.match(text.strip()):
                return _refuse(say("widget.bad_email", language), 400, origin=origin)
            text = say("widget.email_left", language, email=text.strip())
        if len(text) > self.max_chars:
            refused = say("widget.too_long", language, chars=self.max_chars)
            return _refuse(refused, 413, origin=origin)
        who = self._person(request, site, issue=True)
        if isinstance(who, str):
            return _refuse(say(who, language), 403, origin=origin)
        person, name, fresh = who
        limited = self._limited(request, site, person, language)
        if limited is not None:
            _cors(limited, origin, fresh)
            return limited
        inbound = Inbound(
            ref=ConversationRef("widget", site.tenant, f"{site.key}.{person}"),
            user=person,
            text=text,
            event_id=f"{site.key}.{person}:{message_id}",
            user_name=name or say("handoff.customer_default_name", language),
            meta={"language": language, "site": site.key},
        )
        try:
            accepted = await conversations.accept(inbound)
        except StorageError:
            log.exception("widget: could not store a message")
            return _refuse(say("web.not_stored", language), 503, origin=origin)
        if accepted.duplicate:
            duplicate = web.json_response({"duplicate": True}, status=409)
            _cors(duplicate, origin, fresh)
            return duplicate
        response = web.StreamResponse(
            headers={"Content-Type": _EVENTS, "Cache-Control": "no-cache"}
        )
        _cors(response, origin, fresh)
        await self._answer(request, response, conversations, accepted)
        return response

    def _limited(
        self, request: web.Request, site: WidgetSite, person: str, language: str
    ) -> web.Response | None:
        """The 429 for a visitor, a site or an address over its limit, or None."""
        wait = self._per_visitor.take(f"{site.key}.{person}") or self._per_address.take(
            client_of(request, self._trusted).address
        )
        key = "widget.too_fast"
        if not wait:
            wait = self._per_site.take(site.key)
            key = "widget.site_busy"
            if wait:
                self._tell_once(f"busy {site.key}", f"widget: site {site.key} is over its limit")
        if not wait:
            return None
        seconds = max(1, round(wait))
        text = say(key, language, seconds=seconds)
        return web.json_response({"error": text}, status=429, headers={"Retry-After": str(seconds)})

    async def _answer(
        self,
        request: web.Request,
        response: web.StreamResponse,
        conversations: Conversations,
        accepted: Accepted,
    ) -> None:
        """Stream the answer as events: ``text`` (the whole text of answer
        message ``n`` so far, from the shared renderer) and ``done`` (its buttons)."""
        buttons: list[dict[str, str]] = []
        chat = accepted.inbound.ref.chat

        async def render(reply: Reply) -> None:
            if not response.prepared:
                await response.prepare(request)
            renderer: StreamRenderer[int] = StreamRenderer(
                sink=_EventSink(response), pacer=self._pacer, keys=(chat,), split=_whole
            )
            await renderer.render(reply)
            buttons.extend(buttons_json(reply.buttons))

        try:
            await conversations.process(accepted, render)
        except (ConnectionResetError, asyncio.CancelledError):
            log.info("widget: visitor went away during answer %s", accepted.inbound_id)
            raise
        if not response.prepared:
            await response.prepare(request)
        await response.write(_event("done", {"buttons": buttons}))
        await response.write_eof()


class _EventSink:
    """The renderer's messages as server-sent events on one response."""

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response
        self._count = 0

    async def post(self, text: str) -> int:
        number = self._count
        self._count += 1
        await self.update(number, text)
        return number

    async def update(self, message: int, text: str) -> None:
        await self._response.write(_event("text", {"n": message, "text": text}))


def _whole(text: str) -> tuple[str, str]:
    # One panel bubble holds an answer of any length.
    return text, ""


def _event(name: str, data: object) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _texts(language: str) -> dict[str, str]:
    """What the panel shows, in the visitor's language."""
    return {
        "open": say("widget.open", language),
        "close": say("widget.close", language),
        "conversation": say("widget.conversation", language),
        "input": say("widget.input", language),
        "placeholder": say("widget.placeholder", language),
        "send": say("widget.send", language),
        "human": say("widget.human", language),
        "unreachable": say("widget.unreachable", language),
        "email_prompt": say("widget.email_prompt", language),
        "email_label": say("widget.email_label", language),
        "email_send": say("widget.email_send", language),
    }


def _language(request: web.Request) -> str:
    """The visitor's language as their browser names it (``de-AT`` → ``de``), English without."""
    raw = request.headers.get(LANGUAGE_HEADER, "") or request.headers.get("Accept-Language", "")
    primary = raw.split(",")[0].split(";")[0].split("-")[0].strip().lower()
    return primary if _LANGUAGE.match(primary) else "en"


async def _read_body(request: web.Request, language: str) -> tuple[str, str] | str:
    """``(text, message_id)`` from the JSON body, or what is wrong with it."""
    if request.content_type != "application/json":
        return say("web.send_json", language)
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, LookupError):
        return say("web.body_not_json", language)
    if not isinstance(body, dict):
        return say("web.body_not_object", language)
    text = body.get("text", body.get("email"))
    message_id = body.get("message_id") or uuid.uuid4().hex
    if not isinstance(message_id, str) or not _ID.match(message_id):
        return say("web.bad_message_id", language)
    if not isinstance(text, str):
        return say("web.bad_text", language)
    return text, message_id


def _cors(response: web.StreamResponse, origin: str, fresh: Visitor | None = None) -> None:
    """Let the page on ``origin`` (one of the site's) read ``response``, and
    hand it a newly issued identity."""
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Vary"] = "Origin"
    response.headers["Access-Control-Expose-Headers"] = VISITOR_HEADER
    if fresh is not None:
        response.headers[VISITOR_HEADER] = fresh.token


def _refuse(text: str, status: int, *, origin: str = "") -> web.Response:
    """A refusal as ``{"error"}``; readable by the page only when its origin is allowed."""
    response = web.json_response({"error": text}, status=status)
    if origin:
        _cors(response, origin)
    return response
