"""A local fake of the Slack Web API and Socket Mode, on 127.0.0.1.

Speaks the real wire protocol the slack-sdk clients use: form, query or JSON
arguments; ``{"ok": true, ...}`` / ``{"ok": false, "error": ...}`` bodies;
HTTP 429 with ``Retry-After``; ``apps.connections.open`` returning a ``ws://``
URL to a Socket Mode websocket served here (``hello``, envelopes, acks and
``disconnect``). It enforces the limits Deskmate must respect (40,000
characters of text, 3,000 per section block, 50 blocks, 13,000 characters of
block text in one message; actions blocks of at most 25 elements, button text
75, value 2,000, action_id 255 characters) and refuses a reply into a thread
that does not exist, so a test fails if the adapter breaks them.

Rate limits are enforced too, answering HTTP 429 ``ratelimited`` with
``Retry-After`` as Slack does: one message write (``chat.postMessage`` or
``chat.update``) per second per channel, and Tier 3 (50 calls a minute per
workspace) for ``chat.update`` and ``chat.delete``. Slack tolerates short
bursts above the per-channel rate; the fake does not, so a write that skips
the adapter's pacing is caught. ``time_scale`` shrinks every window, for tests
that run the adapter with a shorter edit interval.

Also holds helpers to build and sign Events API and interactive
(``block_actions``) payloads the way Slack does.

OAuth (``OAuthApp``): ``/oauth/v2/authorize`` stands for the installer
approving the app in a workspace (``team=``) and sends the browser back to the
redirect URL with a single-use code; ``oauth.v2.access`` exchanges it for a new
bot token of that workspace, checking the client id and secret and that the
redirect URL is the one the code was issued for. Every Web API call records the
token it used (``Call.token``); a token replaced by a reinstall or revoked by an
uninstall is refused with ``invalid_auth``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import math
import time
import uuid
from base64 import b64decode
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
from aiohttp import WSMsgType, web

from tests.support import serve_local

TEXT_LIMIT = 40_000
SECTION_LIMIT = 3_000
BLOCK_LIMIT = 50
HEADER_LIMIT = 150
ACTIONS_ELEMENT_LIMIT = 25
BUTTON_TEXT_LIMIT = 75
BUTTON_VALUE_LIMIT = 2_000
ACTION_ID_LIMIT = 255
BLOCK_ID_LIMIT = 255
# Slack does not document it, but refuses a message whose blocks hold more
# than about 13,200 characters of text in all (``msg_blocks_too_long``).
BLOCKS_TEXT_LIMIT = 13_000
CHANNEL_INTERVAL = 1.0
TIER3_PER_MINUTE = 50
_TIER3 = frozenset({"chat.update", "chat.delete"})
_WRITES = frozenset({"chat.postMessage", "chat.update"})

# Messages people wrote, as (channel, ts): the event builders below stand for
# people writing in Slack, so a thread they started exists for every fake.
_people_messages: set[tuple[str, str]] = set()


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] | None = None
    thread_ts: str = ""
    user: str = ""
    bot_id: str = ""
    team: str = ""
    edits: list[str] = field(default_factory=list)


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str
    at: float


@dataclass
class Workspace:
    team_id: str
    bot_token: str
    bot_user_id: str = "UBOT"
    bot_id: str = "BBOT"
    team_name: str = ""
    # Tokens this workspace's installs had before the current one, now refused.
    revoked: list[str] = field(default_factory=list)


@dataclass
class OAuthApp:
    """The app's credentials and its registered redirect URLs."""

    client_id: str = "1111.2222"
    client_secret: str = "oauth-client-secret"
    app_id: str = "A1"
    redirect_urls: list[str] = field(default_factory=list)


@dataclass
class _Grant:
    team_id: str
    scopes: str
    redirect_uri: str
    used: bool = False


class FakeSlack:
    """Start with ``await FakeSlack().start()``; ``api_url`` is the Web API base."""

    def __init__(
        self,
        *,
        workspaces: list[Workspace] | None = None,
        app_token: str = "xapp-1-test",
        oauth: OAuthApp | None = None,
        time_scale: float = 1.0,
    ) -> None:
        self.workspaces = workspaces or [Workspace("T1", "xoxb-test")]
        self.oauth = oauth
        self._grants: dict[str, _Grant] = {}
        self._installs = itertools.count(1)
        self.app_token = app_token
        self.channel_interval = CHANNEL_INTERVAL * time_scale
        self.tier3_window = 60.0 * time_scale
        # Calls refused for going faster than Slack allows.
        self.rate_limited: list[Call] = []
        self._last_write: dict[str, float] = {}
        self._tier3: dict[tuple[str, str], list[float]] = {}
        # The websocket neither answers nor honours the client's close frame,
        # as a Slack edge that has stopped responding.
        self.ignore_close = False
        self._stopped = asyncio.Event()
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self.reactions: list[tuple[str, str, str]] = []
        self.deleted: list[Message] = []
        self.webhook_posts: list[dict[str, Any]] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self.socket_connections = 0
        self._failures: dict[str, list[tuple[int, dict[str, Any], dict[str, str]]]] = {}
        self._ts = itertools.count(1)
        self._sockets: list[web.WebSocketResponse] = []
        self._ack_events: dict[str, asyncio.Event] = {}
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.handler_delay = 0.0
        self._tickets: set[str] = set()
        self._holds: dict[tuple[str, str, str], asyncio.Event] = {}
        self.held = 0
        # Calls answered after their client had gone: they took no effect.
        self.abandoned: list[Call] = []
        # Modals opened with views.open, in order.
        self.views: list[dict[str, Any]] = []

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link/", self._socket)
        app.router.add_post("/hooks/{id}", self._hook)
        app.router.add_get("/oauth/v2/authorize", self._authorize)
        self._runner, self.port = await serve_local(app)
        return self

    async def stop(self) -> None:
        self._stopped.set()
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{uuid.uuid4().hex}"

    # -- scripting -------------------------------------------------------------------

    def fail_next(self, method: str, error: str, *, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer ``{"ok": false, "error": error}``."""
        for _ in range(times):
            self._failures.setdefault(method, []).append((200, {"ok": False, "error": error}, {}))

    def rate_limit_next(self, method: str, *, retry_after: int = 1, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer HTTP 429 with ``Retry-After``."""
        for _ in range(times):
            self._failures.setdefault(method, []).append(
                (429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)})
            )

    def hold(self, method: str, channel: str = "", *, ts: str = "") -> None:
        """Calls of ``method`` (for ``channel``, or any; about the message ``ts``,
        or any) wait, unprocessed, until ``release``. A call whose client has gone
        by then takes no effect, as a request Slack never finished reading."""
        self._holds[(method, channel, ts)] = asyncio.Event()

    def release(self, method: str, channel: str = "", *, ts: str = "") -> None:
        event = self._holds.pop((method, channel, ts), None)
        if event is not None:
            event.set()

    def _hold_of(self, method: str, args: dict[str, Any]) -> asyncio.Event | None:
        channel = str(args.get("channel") or "")
        ts = str(args.get("timestamp") or args.get("ts") or "")
        for key in itertools.product([method], [channel, ""], [ts, ""]):
            if key in self._holds:
                return self._holds[key]
        return None

    def add_user_message(
        self, channel: str, user: str, text: str, *, thread_ts: str = "", team: str = "T1"
    ) -> str:
        """Record a person's message (what ``conversations.replies`` will return)."""
        ts = self._next_ts()
        self.messages[(channel, ts)] = Message(channel, ts, text, None, thread_ts, user, "", team)
        return ts

    def buttons(self, message: Message) -> list[dict[str, Any]]:
        """The buttons of a message's actions blocks."""
        return [
            element
            for block in message.blocks or []
            if block.get("type") == "actions"
            for element in block.get("elements", [])
            if element.get("type") == "button"
        ]

    def click(
        self, message: Message, label: str, *, user: str = "U7", username: str = "agent"
    ) -> dict[str, Any]:
        """The ``block_actions`` payload Slack sends when ``user`` clicks the
        button labelled ``label`` on ``message`` (which must have it)."""
        block, button = next(
            (b, e)
            for b in message.blocks or []
            if b.get("type") == "actions"
            for e in b.get("elements", [])
            if e.get("type") == "button" and e["text"]["text"] == label
        )
        return block_actions_payload(
            message=_shape(message),
            channel=message.channel,
            team=message.team or self.workspaces[0].team_id,
            user=user,
            username=username,
            action={**button, "block_id": block.get("block_id", "")},
            response_url=self.response_url(),
        )

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def workspace(self, team_id: str) -> Workspace:
        return next(w for w in self.workspaces if w.team_id == team_id)

    def uninstall(self, team_id: str) -> dict[str, Any]:
        """Someone removes the app from the workspace: its token stops working and
        Slack sends ``app_uninstalled`` (returned, for the test to deliver)."""
        workspace = self.workspace(team_id)
        if workspace.bot_token:
            workspace.revoked.append(workspace.bot_token)
        workspace.bot_token = ""
        return event_body({"type": "app_uninstalled", "event_ts": new_ts()}, team=team_id)

    def revoke_bot_token(self, team_id: str) -> dict[str, Any]:
        """The bot token is revoked; returns the ``tokens_revoked`` event."""
        workspace = self.workspace(team_id)
        if workspace.bot_token:
            workspace.revoked.append(workspace.bot_token)
        workspace.bot_token = ""
        event = {
            "type": "tokens_revoked",
            "tokens": {"oauth": [], "bot": [workspace.bot_user_id]},
            "event_ts": new_ts(),
        }
        return event_body(event, team=team_id)

    # -- OAuth -----------------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> web.Response:
        """The installer approves the app in workspace ``team``; the browser goes
        back to the redirect URL with a code (or an error)."""
        app = self.oauth
        query = request.query
        if app is None or query.get("client_id") != app.client_id:
            return web.Response(status=400, text="invalid_client_id")
        redirect = query.get("redirect_uri", "")
        if redirect and redirect not in app.redirect_urls:
            return web.Response(status=400, text="bad_redirect_uri")
        target = redirect or (app.redirect_urls[0] if app.redirect_urls else "")
        if not target:
            return web.Response(status=400, text="no_redirect_uri")
        team = query.get("team", "")
        if not any(w.team_id == team for w in self.workspaces):
            return web.Response(status=400, text="unknown team (pass team=<id>)")
        code = uuid.uuid4().hex
        self._grants[code] = _Grant(team, query.get("scope", ""), redirect)
        params = {"code": code}
        if "state" in query:
            params["state"] = query["state"]
        parts = urlsplit(target)
        query_string = urlencode([*parse_qsl(parts.query), *params.items()])
        raise web.HTTPFound(urlunsplit(parts._replace(query=query_string)))

    async def _oauth_v2_access(self, request: web.Request, args: dict[str, Any]) -> web.Response:
        app = self.oauth
        if app is None:
            return _error("invalid_client_id")
        client_id = str(args.get("client_id") or "")
        client_secret = str(args.get("client_secret") or "")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, client_secret = b64decode(auth[6:]).decode().partition(":")
        if client_id != app.client_id:
            return _error("invalid_client_id")
        if client_secret != app.client_secret:
            return _error("bad_client_secret")
        grant = self._grants.get(str(args.get("code") or ""))
        if grant is None or grant.used:
            return _error("invalid_code")
        if grant.redirect_uri and str(args.get("redirect_uri") or "") != grant.redirect_uri:
            return _error("bad_redirect_uri")
        grant.used = True
        workspace = self.workspace(grant.team_id)
        if workspace.bot_token:
            workspace.revoked.append(workspace.bot_token)
        workspace.bot_token = f"xoxb-{workspace.team_id}-{next(self._installs)}-{uuid.uuid4().hex}"
        return _ok(
            access_token=workspace.bot_token,
            token_type="bot",
            scope=grant.scopes,
            bot_user_id=workspace.bot_user_id,
            app_id=app.app_id,
            team={"id": workspace.team_id, "name": workspace.team_name or workspace.team_id},
            enterprise=None,
            authed_user={"id": "U_INSTALLER"},
            is_enterprise_install=False,
        )

    def bot_messages(
        self, channel: str | None = None, thread_ts: str | None = None
    ) -> list[Message]:
        """Messages the bot posted, oldest first, optionally in one channel / thread."""
        found = [
            m
            for m in self.messages.values()
            if m.bot_id
            and (channel is None or m.channel == channel)
            and (thread_ts is None or m.thread_ts == thread_ts)
        ]
        return sorted(found, key=lambda m: float(m.ts))

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checked on each API call."""
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                try:
                    async with asyncio.timeout(0.2):
                        await self._changed.wait()
                except TimeoutError:
                    pass

    # -- Socket Mode -----------------------------------------------------------------

    async def send_envelope(
        self, payload: dict[str, Any], *, kind: str = "events_api", retry_attempt: int = 0
    ) -> str:
        """Push one envelope to the connected client; returns its envelope id."""
        envelope_id = uuid.uuid4().hex
        self._ack_events[envelope_id] = asyncio.Event()
        message = {
            "envelope_id": envelope_id,
            "type": kind,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
            "payload": payload,
        }
        ws = await self._live_socket()
        await ws.send_str(json.dumps(message))
        return envelope_id

    async def wait_for_ack(self, envelope_id: str, within: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            await self._ack_events[envelope_id].wait()
        return self.acks[envelope_id]

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the client to reconnect, as Slack does every few hours, then hang up."""
        ws = await self._live_socket()
        await ws.send_str(
            json.dumps(
                {
                    "type": "disconnect",
                    "reason": reason,
                    "debug_info": {"host": "fake-slack"},
                }
            )
        )
        # Slack closes the old socket a little after the client has a new one.
        connections = self.socket_connections
        try:
            await self.wait_for(lambda: self.socket_connections > connections, within=5)
        finally:
            await ws.close()
            if ws in self._sockets:
                self._sockets.remove(ws)

    async def wait_connected(self, count: int = 1, within: float = 10.0) -> None:
        await self.wait_for(
            lambda: self.socket_connections >= count and bool(self._sockets), within
        )

    async def _live_socket(self) -> web.WebSocketResponse:
        await self.wait_for(lambda: any(not ws.closed for ws in self._sockets), within=10)
        return next(ws for ws in reversed(self._sockets) if not ws.closed)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        if request.query.get("ticket") not in self._tickets:
            raise web.HTTPUnauthorized(text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True, autoclose=not self.ignore_close)
        await ws.prepare(request)
        self._sockets.append(ws)
        self.socket_connections += 1
        self._touch()
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": len(self._sockets),
                    "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
                    "connection_info": {"app_id": "A1"},
                }
            )
        )
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.CLOSE and self.ignore_close:
                # Neither answer nor hang up: the client is left waiting.
                while not self._stopped.is_set() and not (
                    request.transport is None or request.transport.is_closing()
                ):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopped.wait(), 0.1)
                break
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                break
            if msg.type is WSMsgType.ERROR:
                break
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            envelope_id = data.get("envelope_id")
            if envelope_id:
                self.acks[envelope_id] = data
                event = self._ack_events.get(envelope_id)
                if event is not None:
                    event.set()
                self._touch()
        if ws in self._sockets:
            self._sockets.remove(ws)
        return ws

    # -- Web API ---------------------------------------------------------------------

    def _touch(self) -> None:
        self._changed.set()

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.webhook_posts.append({"url_id": request.match_info["id"], **body})
        self._touch()
        return web.Response(text="ok")

    async def _args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(await request.post())
        if isinstance(args.get("blocks"), str):
            args["blocks"] = json.loads(args["blocks"])
        return args

    def _workspace(self, token: str) -> Workspace | None:
        return next((w for w in self.workspaces if w.bot_token == token), None)

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._args(request)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() or str(args.pop("token", ""))
        self.calls.append(Call(method, args, token, time.monotonic()))
        self._touch()
        if self.handler_delay:
            await asyncio.sleep(self.handler_delay)
        hold = self._hold_of(method, args)
        if hold is not None:
            self.held += 1
            self._touch()
            try:
                await hold.wait()
            finally:
                self.held -= 1
            if request.transport is None or request.transport.is_closing():
                self.abandoned.append(self.calls[-1] if self.calls else Call(method, args, "", 0))
                self._touch()
                return web.Response(status=499, text="client went away")
        queued = self._failures.get(method)
        if queued:
            status, body, headers = queued.pop(0)
            return web.json_response(body, status=status, headers=headers)
        if method == "oauth.v2.access":
            return await self._oauth_v2_access(request, args)
        if method == "apps.connections.open":
            if token != self.app_token:
                return _error("invalid_auth")
            ticket = uuid.uuid4().hex
            self._tickets.add(ticket)
            return _ok(url=f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}")
        workspace = self._workspace(token) if token else None
        if workspace is None:
            return _error("not_authed" if not token else "invalid_auth")
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return _error("unknown_method")
        retry_after = self._retry_after(method, workspace, args)
        if retry_after is not None:
            self.rate_limited.append(self.calls[-1])
            self._touch()
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(retry_after)},
            )
        response = await handler(workspace, args)
        if method in _WRITES and json.loads(response.body)["ok"]:  # type: ignore[arg-type]
            self._last_write[f"{workspace.team_id}/{args.get('channel')}"] = time.monotonic()
        return response

    def _retry_after(self, method: str, ws: Workspace, args: dict[str, Any]) -> int | None:
        """Seconds to wait (as Slack's ``Retry-After``) when this call is over a
        rate limit; ``None`` when it may go through."""
        now = time.monotonic()
        waits: list[float] = []
        if method in _WRITES:
            last = self._last_write.get(f"{ws.team_id}/{args.get('channel')}")
            # A little give for the clocks of two processes; a write that
            # skipped pacing comes milliseconds after the one before.
            if last is not None and now - last < 0.9 * self.channel_interval:
                waits.append(last + self.channel_interval - now)
        if method in _TIER3:
            key = (ws.team_id, method)
            recent = [t for t in self._tier3.get(key, []) if now - t < self.tier3_window]
            if len(recent) >= TIER3_PER_MINUTE:
                waits.append(recent[0] + self.tier3_window - now)
            else:
                recent.append(now)
            self._tier3[key] = recent
        if not waits:
            return None
        return max(1, math.ceil(max(waits)))

    async def _m_auth_test(self, ws: Workspace, args: dict[str, Any]) -> web.Response:
        return _ok(
            url="https://fake.slack.test/",
            team="Fake Team",
            user="deskmate",
            team_id=ws.team_id,
            user_id=ws.bot_user_id,
            bot_id=ws.bot_id,
            is_enterprise_install=False,
        )

    def _check_content(self, args: dict[str, Any]) -> str | None:
        text = args.get("text")
        blocks = args.get("blocks")
        if not text and not blocks:
            return "no_text"
        if text and len(str(text)) > TEXT_LIMIT:
            return "msg_too_long"
        if blocks:
            if not isinstance(blocks, list) or len(blocks) > BLOCK_LIMIT:
                return "invalid_blocks"
            if not all(isinstance(b, dict) and _valid_block(b) for b in blocks):
                return "invalid_blocks"
            block_ids = [b["block_id"] for b in blocks if "block_id" in b]
            if len(block_ids) != len(set(block_ids)):
                return "invalid_blocks"
            if sum(_block_text_len(b) for b in blocks) > BLOCKS_TEXT_LIMIT:
                return "msg_blocks_too_long"
        return None

    async def _m_chat_postMessage(self, ws: Workspace, args: dict[str, Any]) -> web.Response:
        channel = str(args.get("channel") or "")
        if not channel:
            return _error("channel_not_found")
        problem = self._check_content(args)
        if problem:
            return _error(problem)
        thread_ts = str(args.get("thread_ts") or "")
        if thread_ts and not self._exists(channel, thread_ts):
            return _error("thread_not_found")
        ts = self._next_ts()
        message = Message(
            channel=channel,
            ts=ts,
            text=str(args.get("text") or ""),
            blocks=args.get("blocks"),
            thread_ts=str(args.get("thread_ts") or ""),
            user=ws.bot_user_id,
            bot_id=ws.bot_id,
            team=ws.team_id,
        )
        self.messages[(channel, ts)] = message
        return _ok(channel=channel, ts=ts, message=_shape(message))

    def _exists(self, channel: str, ts: str) -> bool:
        return (channel, ts) in self.messages or (channel, ts) in _people_messages

    async def _m_chat_update(self, ws: Workspace, args: dict[str, Any]) -> web.Response:
        key = (str(args.get("channel") or ""), str(args.get("ts") or ""))
        message = self.messages.get(key)
        if message is None:
            return _error("message_not_found")
        if message.bot_id != ws.bot_id:
            return _error("cant_update_message")
        problem = self._check_content(args)
        if problem:
            return _error(problem)
        message.edits.append(message.text)
        message.text = str(args.get("text") or "")
        message.blocks = args.get("blocks")
        return _ok(channel=key[0], ts=key[1], text=message.text, message=_shape(message))

    async def _m_chat_delete(self, ws: Workspace, args: dict[str, Any]) -> web.Response:
        key = (str(args.get("channel") or ""), str(args.get("ts") or ""))
        message = self.messages.get(key)
        if message is None:
            return _error("message_not_found")
        if message.bot_id != ws.bot_id:
            return _error("cant_delete_message")
        del self.messages[key]
        self.deleted.append(message)
        return _ok(channel=key[0], ts=key[1])

    async def _m_reactions_add(self, ws: Workspace, args: dict[str, Any]) -> web.Response:
        entry = (str(args.get("channel")), str(args.get("timestamp")), str(args.get("name")))
        if not all(entry):
            return _error("invalid_arguments")
        if entry in self.reactions:
            return _error("already_reacted")
        self.reactions.append(entry)
        return _ok()

    async def _m_views_open(self, ws: Workspace, args: dict[str, Any]) -> web.Response:
        """Slack's rules: a trigger from an interaction of the last 3 seconds,
        used once; a modal with a short title and at most 100 blocks."""
        trigger = str(args.get("trigger_id") or "")
        issued = _TRIGGERS.pop(trigger, None)
        if issued is None:
            return _error("invalid_trigger_id")
        if time.time() - issued > TRIGGER_LIFETIME:
            return _error("expired_trigger_id")
        view = args.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        if not _valid_view(view):
            return _error("invalid_arguments")
        opened = {**view, "id": f"V{next(self._ts):08d}", "hash": uuid.uuid4().hex[:12]}
        opened["team_id"] = ws.team_id
        self.views.append(opened)
        self._touch()
        return _ok(view=opened)

    def submit_view(
        self, view: dict[str, Any], values: dict[str, str], *, user: str = "U7"
    ) -> dict[str, Any]:
        """The ``view_submission`` payload Slack sends when ``user`` submits
        ``view`` (as views.open returned it) with ``values`` by action id."""
        state: dict[str, dict[str, Any]] = {}
        for block in view.get("blocks", []):
            element = block.get("element") if block.get("type") == "input" else None
            if isinstance(element, dict) and element.get("action_id") in values:
                state.setdefault(block["block_id"], {})[element["action_id"]] = {
                    "type": element["type"],
                    "value": values[element["action_id"]],
                }
        return {
            "type": "view_submission",
            "team": {"id": view.get("team_id", "T1"), "domain": "fake"},
            "user": {"id": user, "username": "agent", "name": "agent"},
            "api_app_id": "A1",
            "token": "legacy-verification-token",
            "trigger_id": _trigger(),
            "view": {**view, "state": {"values": state}},
        }

    async def _m_conversations_replies(self, ws: Workspace, args: dict[str, Any]) -> web.Response:
        channel = str(args.get("channel") or "")
        ts = str(args.get("ts") or "")
        found = [
            m
            for m in self.messages.values()
            if m.channel == channel and (m.ts == ts or m.thread_ts == ts)
        ]
        if not found:
            return _error("thread_not_found")
        found.sort(key=lambda m: float(m.ts))
        return _ok(messages=[_shape(m) for m in found], has_more=False)


def _plain_text(obj: object, limit: int) -> bool:
    return (
        isinstance(obj, dict)
        and obj.get("type") in ("plain_text", "mrkdwn")
        and isinstance(obj.get("text"), str)
        and 0 < len(obj["text"]) <= limit
    )


def _valid_button(element: dict[str, Any]) -> bool:
    text = element.get("text")
    action_id = element.get("action_id", "")
    value = element.get("value", "")
    return (
        _plain_text(text, BUTTON_TEXT_LIMIT)
        and isinstance(text, dict)
        and text.get("type") == "plain_text"
        and isinstance(action_id, str)
        and len(action_id) <= ACTION_ID_LIMIT
        and isinstance(value, str)
        and len(value) <= BUTTON_VALUE_LIMIT
        and element.get("style", "primary") in ("primary", "danger")
    )


def _valid_block(block: dict[str, Any]) -> bool:
    """Slack's rules for the block types Deskmate sends; any other type is refused."""
    if len(str(block.get("block_id", ""))) > BLOCK_ID_LIMIT:
        return False
    kind = block.get("type")
    if kind == "section":
        return _plain_text(block.get("text"), SECTION_LIMIT)
    if kind == "header":
        text = block.get("text")
        return _plain_text(text, HEADER_LIMIT) and text["type"] == "plain_text"  # type: ignore[index]
    if kind == "divider":
        return True
    if kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 0 < len(elements) <= ACTIONS_ELEMENT_LIMIT:
            return False
        ids = [e.get("action_id") for e in elements if isinstance(e, dict) and e.get("action_id")]
        if len(ids) != len(set(ids)):
            return False
        # Only buttons are modelled; other interactive elements are refused.
        return all(
            isinstance(e, dict) and e.get("type") == "button" and _valid_button(e) for e in elements
        )
    return False


def _block_text_len(block: dict[str, Any]) -> int:
    text = block.get("text")
    return len(text.get("text") or "") if isinstance(text, dict) else 0


def _shape(message: Message) -> dict[str, Any]:
    shaped: dict[str, Any] = {"type": "message", "ts": message.ts, "text": message.text}
    if message.user:
        shaped["user"] = message.user
    if message.bot_id:
        shaped["bot_id"] = message.bot_id
    if message.thread_ts:
        shaped["thread_ts"] = message.thread_ts
    if message.blocks:
        shaped["blocks"] = message.blocks
    return shaped


def _ok(**fields: Any) -> web.Response:
    return web.json_response({"ok": True, **fields})


def _error(error: str) -> web.Response:
    return web.json_response({"ok": False, "error": error})


# -- Events API payloads -------------------------------------------------------------

_event_ids = itertools.count(1)
_ts = itertools.count(1)


def new_ts() -> str:
    return f"{int(time.time())}.{500_000 + next(_ts):06d}"


def event_body(event: dict[str, Any], *, team: str = "T1", event_id: str = "") -> dict[str, Any]:
    """An ``event_callback`` envelope as Slack posts it."""
    return {
        "token": "legacy-verification-token",
        "team_id": team,
        "api_app_id": "A1",
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{next(_event_ids):08d}",
        "event_time": int(time.time()),
        "authorizations": [
            {"team_id": team, "user_id": "UBOT", "is_bot": True, "is_enterprise_install": False}
        ],
        "is_ext_shared_channel": False,
    }


def _person_wrote(channel: str, ts: str) -> None:
    _people_messages.add((channel, ts))


def mention_event(
    text: str,
    *,
    channel: str = "C1",
    user: str = "U2",
    team: str = "T1",
    thread_ts: str = "",
    bot_user_id: str = "UBOT",
    event_id: str = "",
) -> dict[str, Any]:
    ts = new_ts()
    event: dict[str, Any] = {
        "type": "app_mention",
        "user": user,
        "text": f"<@{bot_user_id}> {text}",
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "team": team,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    _person_wrote(channel, ts)
    return event_body(event, team=team, event_id=event_id)


def message_event(
    text: str,
    *,
    channel: str = "D1",
    user: str = "U2",
    team: str = "T1",
    channel_type: str = "im",
    thread_ts: str = "",
    event_id: str = "",
    **extra: Any,
) -> dict[str, Any]:
    ts = new_ts()
    event: dict[str, Any] = {
        "type": "message",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "channel_type": channel_type,
        "event_ts": ts,
        "team": team,
        **extra,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    _person_wrote(channel, ts)
    return event_body(event, team=team, event_id=event_id)


# Triggers handed out with interactions, and when: views.open takes each once,
# within 3 seconds, as Slack does.
TRIGGER_LIFETIME = 3.0
_TRIGGERS: dict[str, float] = {}
VIEW_TITLE_LIMIT = 24
VIEW_BLOCKS_LIMIT = 100
PRIVATE_METADATA_LIMIT = 3000
INPUT_LIMIT = 3000


def _trigger() -> str:
    trigger = f"{next(_event_ids)}.{int(time.time())}.{uuid.uuid4().hex[:8]}"
    _TRIGGERS[trigger] = time.time()
    return trigger


def _valid_view(view: object) -> bool:
    if not isinstance(view, dict) or view.get("type") != "modal":
        return False
    for name in ("title", "submit", "close"):
        if name in view and not (
            _plain_text(view[name], VIEW_TITLE_LIMIT) and view[name]["type"] == "plain_text"
        ):
            return False
    if "title" not in view:
        return False
    blocks = view.get("blocks")
    if not isinstance(blocks, list) or not 0 < len(blocks) <= VIEW_BLOCKS_LIMIT:
        return False
    if len(str(view.get("private_metadata", ""))) > PRIVATE_METADATA_LIMIT:
        return False
    inputs = [b for b in blocks if isinstance(b, dict) and b.get("type") == "input"]
    if inputs and "submit" not in view:
        return False  # Slack wants a submit button on a modal with inputs
    for block in inputs:
        element = block.get("element")
        if not (
            _plain_text(block.get("label"), 2000)
            and isinstance(element, dict)
            and element.get("type") == "plain_text_input"
            and element.get("action_id")
            and len(str(element.get("initial_value", ""))) <= INPUT_LIMIT
            and int(element.get("max_length", INPUT_LIMIT)) <= INPUT_LIMIT
        ):
            return False
    others = [b for b in blocks if b not in inputs]
    return all(isinstance(b, dict) and _valid_block(b) for b in others)


def block_actions_payload(
    *,
    message: dict[str, Any],
    channel: str,
    action: dict[str, Any],
    team: str = "T1",
    user: str = "U7",
    username: str = "agent",
    response_url: str = "",
) -> dict[str, Any]:
    """The ``block_actions`` payload for a click on ``action`` (a button as
    posted, plus its ``block_id``) in ``message``."""
    action_ts = f"{time.time():.6f}"
    clicked = {
        "type": action.get("type", "button"),
        "action_id": action["action_id"],
        "block_id": action.get("block_id", ""),
        "text": action.get("text", {"type": "plain_text", "text": ""}),
        "action_ts": action_ts,
    }
    if "value" in action:
        clicked["value"] = action["value"]
    if "style" in action:
        clicked["style"] = action["style"]
    return {
        "type": "block_actions",
        "user": {"id": user, "username": username, "name": username, "team_id": team},
        "api_app_id": "A1",
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "trigger_id": _trigger(),
        "team": {"id": team, "domain": "fake"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "support"},
        "message": message,
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [clicked],
    }


def interactive_body(payload: dict[str, Any]) -> str:
    """How Slack posts an interactive payload: a form with one field, ``payload``."""
    return urlencode({"payload": json.dumps(payload)})


async def deliver(
    session: aiohttp.ClientSession,
    url: str,
    secret: str,
    payload: dict[str, Any],
    *,
    retry: int = 0,
    headers: dict[str, str] | None = None,
) -> int:
    """POST a payload to a request URL the way Slack does, signed: events as
    JSON, interactive payloads (``block_actions``) form-encoded. Returns the status."""
    if payload.get("type") in ("block_actions", "view_submission"):
        body = interactive_body(payload)
        content_type = "application/x-www-form-urlencoded"
    else:
        body = json.dumps(payload)
        content_type = "application/json"
    sent = {"Content-Type": content_type, **sign(secret, body)}
    if retry:
        sent["X-Slack-Retry-Num"] = str(retry)
        sent["X-Slack-Retry-Reason"] = "http_timeout"
    sent.update(headers or {})
    async with session.post(url, data=body, headers=sent) as response:
        await response.read()
        return response.status


def slash_command(
    text: str, *, response_url: str, channel: str = "C1", user: str = "U2", team: str = "T1"
) -> str:
    """A form-encoded ``/deskmate`` slash command body."""
    return urlencode(
        {
            "token": "legacy-verification-token",
            "team_id": team,
            "team_domain": "fake",
            "channel_id": channel,
            "channel_name": "support",
            "user_id": user,
            "user_name": "ann",
            "command": "/deskmate",
            "text": text,
            "api_app_id": "A1",
            "response_url": response_url,
            "trigger_id": f"{next(_event_ids)}.{int(time.time())}.{uuid.uuid4().hex[:8]}",
        }
    )


def sign(secret: str, body: str, timestamp: str | None = None) -> dict[str, str]:
    """Headers Slack sends with a signed request (v0 HMAC-SHA256 of ``v0:ts:body``)."""
    ts = timestamp if timestamp is not None else str(int(time.time()))
    base = f"v0:{ts}:{body}".encode()
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}
