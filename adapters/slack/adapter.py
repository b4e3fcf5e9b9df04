"""The Slack adapter: slack-bolt's AsyncApp over Socket Mode or the HTTP Events API.

Flow for every delivery: Bolt verifies and routes it, the listener stores it
with ``conversations.accept`` (a storage failure fails the delivery so Slack
sends it again), acknowledges, and answers in a background task that streams
the reply into the thread. A redelivered event (HTTP ``X-Slack-Retry-Num`` or
a Socket Mode retry) has the same ``event_id``, so ``accept`` reports it as a
duplicate and nothing is posted twice.

Bolt and slack-sdk objects stay inside this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters.common import AnswerTasks, EditPacer
from adapters.slack.convert import (
    CLAIM_ACTION,
    COMMAND_ACTION,
    MESSAGE_LIMIT,
    PLATFORM,
    POST_LIMIT,
    RESOLVE_ACTION,
    Route,
    action_to_inbound,
    as_slash_commands,
    command_block,
    command_to_inbound,
    escape,
    event_to_inbound,
    message_blocks,
    route_event,
    split_first,
    split_text,
    team_of,
    thread_of,
    ticket_blocks,
)
from adapters.slack.oauth import (
    CALLBACK_OPTIONS,
    INSTALL_PATH,
    REDIRECT_PATH,
    STATE_SECONDS,
    InstallationStore,
    OAuthConfig,
    PurgeJob,
    StateStore,
    WorkspaceBots,
    authorization_url,
    manifest_scopes,
)
from adapters.slack.render import PLACEHOLDER, pacing_keys, take_slot, thread_renderer
from bot.errors import ConfigError, StorageError
from bot.types import (
    Accepted,
    ConversationRef,
    Conversations,
    Inbound,
    Render,
    Reply,
    ReplyKind,
    TicketThread,
    Undeliverable,
)

log = logging.getLogger(__name__)

PUBLIC_API_URL = "https://slack.com/api/"
SLASH_COMMAND = "/deskmate"
SEEN_REACTION = "eyes"
# How long the ack path may spend asking Slack whether Deskmate is in a thread
# (Slack wants an ack within 3 s; we aim for 1 s).
THREAD_LOOKUP_TIMEOUT = 0.7
_DIGITS = re.compile(r"^[0-9]{1,12}$")
# Refusals of a message's blocks that the same text without blocks gets past.
_BLOCK_ERRORS = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_blocks_too_long"})
# Shutdown must end well within the 10 s a platform gives after SIGTERM before
# it kills the process: every wait in ``stop`` is bounded. Answers in progress
# get ``shutdown_timeout`` to finish, then are cut off (they stay stored as
# unanswered and are answered at the next start) and get CANCEL_TIMEOUT to
# take their messages back (CLEANUP_TIMEOUT) and record that.
SOCKET_CLOSE_TIMEOUT = 2.0
CANCEL_TIMEOUT = 2.0
CLEANUP_TIMEOUT = 1.5
SESSION_CLOSE_TIMEOUT = 1.0
# What the operator can do about the Web API errors a reply commonly meets.
_HINTS = {
    "not_in_channel": " (invite the bot: /invite @Deskmate in that channel)",
    "channel_not_found": " (the channel is gone, or private and the bot is not in it)",
    "is_archived": " (the channel is archived)",
    "missing_scope": " (add the scopes in adapters/slack/manifest.yaml and reinstall the app)",
    "invalid_auth": " (SLACK_BOT_TOKEN is no longer valid)",
    "token_revoked": " (the app was uninstalled or its token revoked)",
    "account_inactive": " (the app was uninstalled or its token revoked)",
    "thread_not_found": " (the thread's first message was deleted)",
}
# Refusals that sending again cannot fix: the outbox gives up on them at once.
_UNDELIVERABLE = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "thread_not_found",
    }
)


def _utf8(raw: bytes) -> str | None:
    """``raw`` decoded as UTF-8, or ``None`` when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class _DropTokenWarning(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the environment by itself and then warns
    that the client we pass wins; that is intended, so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


_bolt_log = logging.getLogger("adapters.slack.bolt")
_bolt_log.addFilter(_DropTokenWarning())


class ThreadMembers:
    """Which channel threads Deskmate is part of, and with whom.

    A thread joins when someone mentions Deskmate in it; later replies from
    people who mentioned it continue the conversation without a new mention.
    Kept in memory (bounded LRU); after a restart ``conversations.replies``
    rebuilds an unknown thread's entry on first use.
    """

    def __init__(self, *, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._threads: OrderedDict[tuple[str, str, str], set[str]] = OrderedDict()

    def join(self, team: str, channel: str, thread: str, user: str) -> None:
        key = (team, channel, thread)
        users = self._threads.setdefault(key, set())
        users.add(user)
        self._threads.move_to_end(key)
        while len(self._threads) > self.capacity:
            self._threads.popitem(last=False)

    def known(self, team: str, channel: str, thread: str) -> bool:
        return (team, channel, thread) in self._threads

    def remember(self, team: str, channel: str, thread: str, users: set[str]) -> None:
        """Record a thread's members as found in its history (empty: not ours)."""
        key = (team, channel, thread)
        self._threads[key] = set(users)
        self._threads.move_to_end(key)
        while len(self._threads) > self.capacity:
            self._threads.popitem(last=False)

    def includes(self, team: str, channel: str, thread: str, user: str) -> bool:
        users = self._threads.get((team, channel, thread))
        return users is not None and user in users


class SlackAdapter:
    """Deskmate on Slack. See the module docstring for the delivery flow."""

    name = "slack"

    def __init__(
        self,
        *,
        bot_token: str = "",
        oauth: OAuthConfig | None = None,
        app_token: str = "",
        signing_secret: str = "",
        api_url: str = "",
        edit_interval: float = 1.2,
        max_retries: int = 3,
        shutdown_timeout: float = 4.0,
        max_concurrent_answers: int = 16,
    ) -> None:
        if not bot_token and oauth is None:
            raise ConfigError(
                "the Slack adapter needs SLACK_BOT_TOKEN, or SLACK_CLIENT_ID and "
                "SLACK_CLIENT_SECRET to be installed through /slack/install"
            )
        if not app_token and not signing_secret:
            raise ConfigError(
                "Slack needs SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET "
                "(HTTP Events API at /slack/events)"
            )
        base_url = api_url or PUBLIC_API_URL
        if not base_url.endswith("/"):
            base_url += "/"  # slack-sdk appends the method name directly
        self.socket_mode = bool(app_token)
        self._app_token = app_token
        self._signing_secret = signing_secret
        # With OAuth it has no token: each workspace's calls go through
        # ``_client_for`` (and Bolt's per-request client), sharing its session.
        self.client = AsyncWebClient(
            token=bot_token or None,
            base_url=base_url,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(max_retry_count=max_retries),
                # Honours Retry-After on HTTP 429.
                AsyncRateLimitErrorRetryHandler(max_retry_count=max_retries),
            ],
        )
        self.oauth = oauth
        self.installations: InstallationStore | None = None
        self.bots: WorkspaceBots | None = None
        self.purge: PurgeJob | None = None
        self._clients: OrderedDict[str, AsyncWebClient] = OrderedDict()
        self.app = AsyncApp(
            client=self.client,
            signing_secret=signing_secret,
            request_verification_enabled=not self.socket_mode,
            # Run the listener before answering Slack: the event is stored by the
            # time we say 200, and a storage failure answers 500 so Slack retries.
            process_before_response=True,
            name="deskmate",
            logger=_bolt_log,
            **(self._oauth_app_options(oauth, base_url) if oauth is not None else {}),
        )
        if oauth is not None:
            self.app.use(self._remember_workspace)
            # Before the catch-all below, which would acknowledge them unheard.
            self.app.event("app_uninstalled")(self._on_app_uninstalled)
            self.app.event("tokens_revoked")(self._on_tokens_revoked)
        self.app.event("app_mention")(self._on_event)
        self.app.event("message")(self._on_event)
        self.app.command(SLASH_COMMAND)(self._on_command)
        self.app.action(re.compile(f"^({CLAIM_ACTION}|{RESOLVE_ACTION})$"))(self._on_ticket_button)
        self.app.action(re.compile(f"^{COMMAND_ACTION}:[0-9]+$"))(self._on_command_button)
        self.app.action(re.compile(".*"))(self._on_other_action)
        # Anything else subscribed to is acknowledged, never answered 404.
        self.app.event(re.compile(".*"))(self._on_other_event)
        self.app.error(self._on_error)
        self._verifier = SignatureVerifier(signing_secret) if signing_secret else None
        self._socket: AsyncSocketModeHandler | None = None
        self._conversations: Conversations | None = None
        self._pacer = EditPacer(edit_interval)
        self.threads = ThreadMembers()
        self.bot_user_id = ""
        self.bot_id = ""
        # Bounded, so a burst of answers cannot starve the ack path (which
        # must store and answer Slack within a second).
        self.answers = AnswerTasks(
            platform="slack",
            answer=self._answer,
            limit=max_concurrent_answers,
            drain_timeout=shutdown_timeout,
            cancel_timeout=CANCEL_TIMEOUT,
        )
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, conversations: Conversations) -> None:
        """Check the token, connect (Socket Mode) and answer events stored but never
        answered before the last stop."""
        via = "Socket Mode" if self.socket_mode else "HTTP Events API at /slack/events"
        if self.oauth is None:
            try:
                auth = await self.client.auth_test()
            except SlackApiError as exc:
                raise ConfigError(
                    f"Slack refused SLACK_BOT_TOKEN ({exc.response.get('error')}); "
                    "copy the Bot User OAuth Token (xoxb-...) from the app's settings"
                ) from exc
            self.bot_user_id = str(auth.get("user_id") or "")
            self.bot_id = str(auth.get("bot_id") or "")
            log.info(
                "Slack: connected as %s (%s) in team %s via %s",
                auth.get("user"),
                self.bot_user_id,
                auth.get("team_id"),
                via,
            )
        else:
            log.info(
                "Slack: serving every workspace that installs the app (%s) via %s",
                INSTALL_PATH,
                via,
            )
            if self.purge is not None:
                self.purge.start()
        # One pooled session for every Web API call; slack-sdk opens a new
        # connection per call otherwise.
        self.client.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.client.timeout)
        )
        self._conversations = conversations
        self.answers.replay(await self.answers.claim_pending(conversations))
        if self.socket_mode:
            self._socket = AsyncSocketModeHandler(
                self.app, app_token=self._app_token, web_client=self.client
            )
            try:
                # The SDK's connect() retries a refused token forever; ask once
                # ourselves so a wrong token stops start-up with a clear error.
                opened = await self.client.apps_connections_open(app_token=self._app_token)
            except SlackApiError as exc:
                raise ConfigError(
                    f"Slack refused SLACK_APP_TOKEN ({exc.response.get('error')}); use an "
                    "app-level token (xapp-...) with the connections:write scope and turn "
                    "Socket Mode on in the app's settings"
                ) from exc
            self._socket.client.wss_uri = str(opened["url"])
            await self._socket.connect_async()

    async def stop(self) -> None:
        """Stop taking events and let answers in progress finish, every wait bounded.

        The websocket is closed while the answers finish: Slack not answering
        the close must not eat the answers' time.
        """
        self._stopping = True
        socket, self._socket = self._socket, None
        closing = asyncio.create_task(_close_socket(socket)) if socket is not None else None
        try:
            if self.purge is not None:
                await self.purge.stop()
            await self.answers.drain()
        finally:
            if closing is not None:
                await closing
            self._clients.clear()
            session, self.client.session = self.client.session, None
            if session is not None:
                try:
                    async with asyncio.timeout(SESSION_CLOSE_TIMEOUT):
                        await session.close()
                except TimeoutError:
                    log.warning("Slack: the Web API connections did not close in time")

    async def wait_idle(self) -> None:
        """Return once no answer is in progress (answers started meanwhile included)."""
        await self.answers.wait_idle()

    async def send(self, ref: ConversationRef, text: str) -> None:
        """Post ``text`` (split to Slack's limits) into the conversation's thread."""
        if not text.strip():
            raise ValueError("Slack refuses empty messages; nothing to send")
        for chunk in split_text(text, POST_LIMIT):
            await self._paced_post(ref.tenant, ref.chat, ref.thread, chunk)

    async def post(
        self,
        ref: ConversationRef,
        text: str,
        *,
        reply_to: str = "",
        buttons: Sequence[tuple[str, str]] = (),
    ) -> str:
        """Post ``text`` into the conversation (its thread when it has one) for the
        outbox, ``buttons`` in an actions block under its last message; returns
        the ts of the first message.

        Raises ``Undeliverable`` for a refusal that sending again cannot fix.
        """
        if not text.strip():
            raise Undeliverable("Slack refuses empty messages")
        # Slack has no reply without a thread: a reply hangs off its message's thread.
        thread = ref.thread or reply_to
        actions = _actions(buttons, ref)
        first = ""
        try:
            chunks = split_text(text, POST_LIMIT)
            for i, chunk in enumerate(chunks):
                last = i == len(chunks) - 1
                ts = await self._paced_post(
                    ref.tenant, ref.chat, thread, chunk, actions=actions if last else None
                )
                first = first or ts
        except SlackApiError as exc:
            _refuse_for_good(exc, ref.chat)
            raise
        return first

    async def open_ticket(
        self, space: ConversationRef, *, title: str, text: str, ticket_id: int
    ) -> TicketThread:
        """Post a ticket at the top of the support channel, with Claim and Resolve
        buttons; agents answer in its thread."""
        fallback = escape(split_first(text, MESSAGE_LIMIT)[0])
        kwargs: dict[str, Any] = {"channel": space.chat, "text": fallback}
        client = await self._client_for(space.tenant)
        keys = pacing_keys(space.tenant, space.chat)[:1]
        await take_slot(self._pacer, *keys)
        try:
            try:
                response = await client.chat_postMessage(
                    **kwargs, blocks=ticket_blocks(title, text, ticket_id)
                )
            except SlackApiError as exc:
                if exc.response.get("error") not in _BLOCK_ERRORS:
                    raise
                # Without buttons agents still have the words (claim, resolve).
                log.warning("Slack: ticket #%s refused with blocks; posting text", ticket_id)
                response = await client.chat_postMessage(**kwargs)
        except SlackApiError as exc:
            _refuse_for_good(exc, space.chat)
            raise
        finally:
            self._pacer.mark(*keys)
        ts = str(response["ts"])
        return TicketThread(thread=ts, message=ts)

    # -- HTTP Events API -----------------------------------------------------------

    async def handle_http(self, request: web.Request) -> web.StreamResponse:
        """``POST /slack/events``: verify, hand to Bolt, answer with Bolt's response."""
        # Slack signs the raw bytes of a UTF-8 body. They are decoded as UTF-8
        # here, whatever charset the request declares: decoding by that charset
        # before the check turned an unsigned request with an unknown charset
        # or bytes that are not UTF-8 into a 500 instead of a 401.
        body = _utf8(await request.read())
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        # Checked here so that a malformed timestamp or signature is a 401, not
        # an exception inside Bolt's verifier (which would be a 500).
        if (
            self._verifier is None
            or body is None
            or not _DIGITS.match(timestamp)
            or not signature.isascii()
            or not self._verifier.is_valid(body, timestamp, signature)
        ):
            log.warning(
                "Slack: refused an unsigned or badly signed request from %s", request.remote
            )
            return web.json_response({"error": "invalid request"}, status=401)
        if self._conversations is None or self._stopping:
            # Slack retries non-2xx deliveries; we will be ready by then.
            return web.json_response({"error": "starting up"}, status=503)
        retry = request.headers.get("X-Slack-Retry-Num")
        if retry:
            log.info(
                "Slack: redelivery #%s (%s)", retry, request.headers.get("X-Slack-Retry-Reason")
            )
        try:
            # Bolt's to_bolt_request, reusing the body already read for verification.
            bolt_request = AsyncBoltRequest(
                body=body,
                query=request.query_string,
                headers=request.headers,  # type: ignore[arg-type]
            )
        except ValueError:
            log.warning("Slack: a signed request had a body that is not JSON or a form")
            return web.json_response({"error": "malformed body"}, status=400)
        bolt_response = await self.app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    # -- listeners (run by Bolt before it answers Slack) ---------------------------

    async def _on_event(self, body: dict[str, Any], ack: Callable[[], Awaitable[Any]]) -> None:
        conversations = self._require_conversations()
        event = body.get("event") or {}
        team = team_of(body)
        channel = str(event.get("channel") or "")
        user = str(event.get("user") or "")
        listening = bool(channel) and conversations.listens_to(
            ConversationRef(PLATFORM, team, channel)
        )
        bot_user_id, bot_id = await self._identity(team)
        route = route_event(body, bot_user_id=bot_user_id, bot_id=bot_id, listening=listening)
        if route is Route.THREAD and not await self._in_thread(
            team, channel, thread_of(event), user
        ):
            route = Route.IGNORE
        if route is Route.IGNORE:
            await ack()
            return
        try:
            inbound = event_to_inbound(body, bot_user_id=bot_user_id, space=route is Route.SPACE)
        except ValueError as exc:
            # Redelivering it would not help; say why and move on.
            log.warning("Slack: ignored a malformed event %s: %s", body.get("event_id"), exc)
            await ack()
            return
        accepted = await conversations.accept(inbound)  # StorageError -> 500 -> Slack retries
        await ack()
        if route is Route.MENTION:
            self.threads.join(team, channel, inbound.ref.thread, user)
        if not accepted.duplicate:
            self.answers.spawn(accepted)

    async def _on_command(self, body: dict[str, Any], ack: Callable[..., Awaitable[Any]]) -> None:
        conversations = self._require_conversations()
        try:
            inbound = command_to_inbound(body)
        except ValueError as exc:
            log.warning("Slack: malformed slash command: %s", exc)
            await ack(text="Sorry, Slack sent an incomplete command. Please try again.")
            return
        await self._store_and_answer(conversations, inbound, ack)

    async def _store_and_answer(
        self,
        conversations: Conversations,
        inbound: Inbound,
        ack: Callable[..., Awaitable[Any]],
    ) -> None:
        """Store, then acknowledge Slack, then answer in the background (a storage
        failure raises before the ack, so Slack sends the delivery again)."""
        accepted = await conversations.accept(inbound)
        await ack()
        if not accepted.duplicate:
            self.answers.spawn(accepted)

    async def _on_ticket_button(
        self, body: dict[str, Any], ack: Callable[..., Awaitable[Any]]
    ) -> None:
        """A Claim or Resolve click: the command it stands for, in the ticket's thread.

        Slack wants the ack within 3 s and never sends the click again, so it is
        stored first and a storage failure shows as Slack's own error to the agent.
        """
        conversations = self._require_conversations()
        try:
            inbound = action_to_inbound(body)
        except ValueError as exc:
            log.warning("Slack: ignored a malformed button click: %s", exc)
            await ack()
            return
        if not conversations.listens_to(
            ConversationRef(PLATFORM, inbound.ref.tenant, inbound.ref.chat)
        ):
            # A ticket left in a channel that is no longer a support space.
            log.info("Slack: ignored a ticket button outside the support spaces")
            await ack()
            return
        await self._store_and_answer(conversations, inbound, ack)

    async def _on_command_button(
        self, body: dict[str, Any], ack: Callable[..., Awaitable[Any]]
    ) -> None:
        """A click on a reply's or a notice's button: its command, sent by the
        clicker into the conversation, stored before Slack is acknowledged."""
        conversations = self._require_conversations()
        try:
            inbound = action_to_inbound(body)
        except ValueError as exc:
            log.warning("Slack: ignored a malformed button click: %s", exc)
            await ack()
            return
        await self._store_and_answer(conversations, inbound, ack)

    async def _on_other_event(self, ack: Callable[[], Awaitable[Any]]) -> None:
        await ack()

    async def _on_other_action(self, ack: Callable[[], Awaitable[Any]]) -> None:
        await ack()

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        if body.get("type") == "block_actions":
            # Slack never sends a click again; it shows the clicker an error instead.
            log.error(
                "Slack: a button click failed before it was stored; the agent can click again",
                exc_info=error,
            )
            return
        log.error(
            "Slack: delivery %s failed before it was stored; Slack will send it again",
            body.get("event_id") or body.get("trigger_id") or "?",
            exc_info=error,
        )

    # -- answering -------------------------------------------------------------------

    async def _answer(self, accepted: Accepted) -> None:
        """Answer one stored event (run by ``self.answers``, which logs other failures)."""
        conversations = self._require_conversations()
        inbound = accepted.inbound
        seen: asyncio.Task[None] | None = None
        try:
            if inbound.meta.get("kind") == "command":
                await conversations.process(accepted, self._command_renderer(inbound))
            else:
                if not inbound.meta.get("space"):
                    # In a support space the relay is the sign it was read;
                    # a reaction on every agent's line would be noise. Not
                    # awaited before ``process``: the conversation's turn is
                    # taken in the order the events came, and a slow reaction
                    # must not let the thread's next message go first.
                    seen = asyncio.create_task(self._react(inbound))
                await conversations.process(accepted, self._thread_renderer(inbound))
                if seen is not None:
                    await seen
        except Undeliverable as exc:
            log.error("Slack: could not answer %s: %s", inbound.event_id, exc)
        except SlackApiError as exc:
            # The manager has marked the inbound failed; a redelivery retries it.
            error = str(exc.response.get("error") or exc)
            log.error(
                "Slack: could not answer %s in %s: %s%s",
                inbound.event_id,
                inbound.meta.get("channel"),
                error,
                _HINTS.get(error, ""),
            )
        finally:
            if seen is not None and not seen.done():
                seen.cancel()

    def _thread_renderer(self, inbound: Inbound) -> Render:
        channel = str(inbound.meta.get("channel") or inbound.ref.chat)
        thread = str(inbound.meta.get("thread_ts") or inbound.ref.thread)
        team = inbound.ref.tenant

        async def render(reply: Reply) -> None:
            if not reply.should_render:
                return
            sink = _ThreadSink(self, channel, thread, team, _actions(reply.buttons, inbound.ref))
            renderer = thread_renderer(
                sink=sink,
                pacer=self._pacer,
                keys=pacing_keys(team, channel),
                placeholder=PLACEHOLDER if reply.kind is ReplyKind.ANSWER else "",
            )

            async def chunks() -> AsyncIterator[str]:
                try:
                    async for chunk in reply:
                        yield chunk
                finally:
                    sink.final = True

            try:
                await renderer.render(chunks())
                await sink.finish(renderer.messages)
            except BaseException:
                # The event stays stored as unanswered and is answered again
                # (Slack's redelivery, the next start): a placeholder or half
                # an answer left here would sit beside that answer for good.
                await self._take_back(team, channel, renderer.messages)
                raise

        return render

    async def _take_back(self, team: str, channel: str, messages: list[str]) -> None:
        """Delete the messages of an answer that did not finish; best effort, bounded."""
        if not messages:
            return
        try:
            async with asyncio.timeout(CLEANUP_TIMEOUT):
                client = await self._client_for(team)
                for ts in messages:
                    await client.chat_delete(channel=channel, ts=ts)
        except (SlackApiError, Undeliverable, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("Slack: could not take back an unfinished answer in %s: %r", channel, exc)

    def _command_renderer(self, inbound: Inbound) -> Render:
        response_url = str(inbound.meta.get("response_url") or "")

        async def render(reply: Reply) -> None:
            if not reply.should_render:
                return
            text = as_slash_commands(await reply.collect(), SLASH_COMMAND)
            if not response_url:
                await self.send(inbound.ref, text)
                return
            hook = AsyncWebhookClient(response_url)
            # A response_url takes five posts; commands answer in far fewer.
            for chunk in split_text(text, MESSAGE_LIMIT)[:5]:
                result = await hook.send(
                    text=escape(chunk), response_type="ephemeral", replace_original=False
                )
                if result.status_code != 200:
                    raise RuntimeError(
                        f"response_url refused the command reply: {result.status_code} "
                        f"{result.body[:200]!r}"
                    )

        return render

    async def _react(self, inbound: Inbound) -> None:
        """Mark the person's message as seen; best effort (missing scope, deleted message)."""
        ts = str(inbound.meta.get("ts") or "")
        if not ts:
            return
        client = await self._client_for(inbound.ref.tenant)
        try:
            await client.reactions_add(
                channel=str(inbound.meta.get("channel")), timestamp=ts, name=SEEN_REACTION
            )
        except SlackApiError as exc:
            if exc.response.get("error") != "already_reacted":
                log.info("Slack: could not add a reaction: %s", exc.response.get("error"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("Slack: could not add a reaction: %r", exc)

    async def _paced_post(
        self,
        team: str,
        channel: str,
        thread: str,
        text: str,
        *,
        actions: dict[str, Any] | None = None,
    ) -> str:
        """``_post`` in the channel's next write slot (about one message a second)."""
        keys = pacing_keys(team, channel)[:1]
        await take_slot(self._pacer, *keys)
        try:
            return await self._post(channel, thread, text, team=team, actions=actions)
        finally:
            self._pacer.mark(*keys)

    async def _paced_update(
        self, team: str, channel: str, ts: str, text: str, *, actions: dict[str, Any] | None
    ) -> None:
        """``_update`` in the next slot of the channel and the workspace (Tier 3)."""
        keys = pacing_keys(team, channel)
        await take_slot(self._pacer, *keys)
        try:
            await self._update(channel, ts, text, team=team, actions=actions)
        finally:
            self._pacer.mark(*keys)

    async def _post(
        self,
        channel: str,
        thread: str,
        text: str,
        *,
        team: str = "",
        actions: dict[str, Any] | None = None,
    ) -> str:
        kwargs: dict[str, Any] = {"channel": channel, "text": escape(text)}
        if thread:
            kwargs["thread_ts"] = thread
        blocks = _with_actions(message_blocks(text), actions)
        client = await self._client_for(team)
        try:
            response = await client.chat_postMessage(**kwargs, blocks=blocks or None)
        except SlackApiError as exc:
            if exc.response.get("error") not in _BLOCK_ERRORS:
                raise
            # Fall back to plain text when Slack rejects the blocks.
            response = await client.chat_postMessage(**kwargs)
        return str(response["ts"])

    async def _update(
        self,
        channel: str,
        ts: str,
        text: str,
        *,
        team: str = "",
        actions: dict[str, Any] | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"channel": channel, "ts": ts, "text": escape(text)}
        blocks = _with_actions(message_blocks(text), actions)
        client = await self._client_for(team)
        try:
            await client.chat_update(**kwargs, blocks=blocks)
        except SlackApiError as exc:
            if exc.response.get("error") not in _BLOCK_ERRORS:
                raise
            await client.chat_update(**kwargs, blocks=[])

    # -- helpers ---------------------------------------------------------------------

    async def _in_thread(self, team: str, channel: str, thread: str, user: str) -> bool:
        """Is ``user`` talking with Deskmate in this thread?"""
        if not self.threads.known(team, channel, thread):
            await self._load_thread(team, channel, thread)
        return self.threads.includes(team, channel, thread, user)

    async def _load_thread(self, team: str, channel: str, thread: str) -> None:
        """Rebuild a thread's members from its history (after a restart)."""
        bot_user_id, bot_id = await self._identity(team)
        try:
            async with asyncio.timeout(THREAD_LOOKUP_TIMEOUT):
                client = await self._client_for(team)
                response = await client.conversations_replies(channel=channel, ts=thread, limit=200)
        except (SlackApiError, Undeliverable) as exc:
            # Permanent (missing scope, thread gone): treat as a thread we are not in.
            error = exc.response.get("error") if isinstance(exc, SlackApiError) else exc
            log.info("Slack: conversations.replies failed: %s", error)
            self.threads.remember(team, channel, thread, set())
            return
        # A timeout propagates: the delivery fails and Slack sends it again.
        messages = response.get("messages") or []
        mention = f"<@{bot_user_id}"
        bot_spoke = any(
            m.get("user") == bot_user_id or (bot_id and m.get("bot_id") == bot_id) for m in messages
        )
        users = (
            {str(m.get("user")) for m in messages if mention in (m.get("text") or "")}
            if bot_spoke and bot_user_id
            else set()
        )
        self.threads.remember(team, channel, thread, users)

    # -- workspaces (tokens) -----------------------------------------------------------

    def _oauth_app_options(self, oauth: OAuthConfig, base_url: str) -> dict[str, Any]:
        """AsyncApp's arguments for OAuth: installs, states and authorize in our database."""
        self.installations = InstallationStore(
            oauth.repository, on_uninstalled=self._workspaces_gone
        )
        self.bots = WorkspaceBots(oauth.repository)
        self.purge = PurgeJob(oauth.repository, retention=oauth.retention)
        settings = AsyncOAuthSettings(
            client_id=oauth.client_id,
            client_secret=oauth.client_secret,
            scopes=manifest_scopes(),
            user_scopes=[],
            redirect_uri=oauth.redirect_uri or None,
            install_path=INSTALL_PATH,
            redirect_uri_path=REDIRECT_PATH,
            callback_options=CALLBACK_OPTIONS,
            authorization_url=authorization_url(base_url),
            installation_store=self.installations,
            installation_store_bot_only=True,
            state_store=StateStore(oauth.repository),
            state_expiration_seconds=STATE_SECONDS,
            logger=_bolt_log,
        )
        return {
            "oauth_settings": settings,
            "installation_store": self.installations,
            "installation_store_bot_only": True,
            # A workspace's token maps to the same bot for its life: its
            # auth.test answer is kept instead of asked on every event.
            "authorize": AsyncInstallationStoreAuthorize(
                logger=_bolt_log,
                installation_store=self.installations,
                bot_only=True,
                cache_enabled=True,
            ),
        }

    async def _client_for(self, team: str) -> AsyncWebClient:
        """The Web API client holding the bot token of workspace ``team``.

        Raises ``Undeliverable`` when no installation serves that workspace.
        """
        if self.bots is None:
            return self.client
        bot = await self.bots.get(team)
        if bot is None:
            raise Undeliverable(
                f"Deskmate is not installed in Slack workspace {team or '?'} "
                f"(install it from {INSTALL_PATH})"
            )
        client = self._clients.get(bot.token)
        if client is None:
            client = AsyncWebClient(
                token=bot.token,
                base_url=self.client.base_url,
                timeout=self.client.timeout,
                session=self.client.session,
                retry_handlers=list(self.client.retry_handlers or []),
            )
            self._clients[bot.token] = client
            while len(self._clients) > 1_000:
                self._clients.popitem(last=False)
        return client

    async def _identity(self, team: str) -> tuple[str, str]:
        """The bot's user id and bot id in workspace ``team`` (each install has its own)."""
        if self.bots is None:
            return self.bot_user_id, self.bot_id
        bot = await self.bots.get(team)
        return (bot.bot_user_id, bot.bot_id) if bot is not None else ("", "")

    def _workspaces_gone(self, teams: list[str]) -> None:
        if self.bots is not None:
            self.bots.forget(teams)
        self._clients.clear()
        if self.purge is not None:
            self.purge.wake()

    async def _remember_workspace(
        self, context: AsyncBoltContext, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        """Bolt middleware: note which org a workspace of an org-wide install belongs
        to, so replies outside a request (the outbox) find the org's token."""
        if (
            self.bots is not None
            and context.is_enterprise_install
            and context.enterprise_id
            and context.team_id
        ):
            await self.bots.link(context.team_id, context.enterprise_id)
        return await next()

    async def _on_app_uninstalled(
        self, context: AsyncBoltContext, ack: Callable[[], Awaitable[Any]]
    ) -> None:
        assert self.installations is not None
        enterprise, team = _installation_of(context)
        await self.installations.async_delete_all(enterprise_id=enterprise, team_id=team)
        await ack()

    async def _on_tokens_revoked(
        self,
        event: dict[str, Any],
        context: AsyncBoltContext,
        ack: Callable[[], Awaitable[Any]],
    ) -> None:
        assert self.installations is not None
        enterprise, team = _installation_of(context)
        tokens = event.get("tokens") or {}
        for user in tokens.get("oauth") or []:
            await self.installations.async_delete_installation(
                enterprise_id=enterprise, team_id=team, user_id=str(user)
            )
        if tokens.get("bot"):
            await self.installations.async_delete_bot(enterprise_id=enterprise, team_id=team)
        await ack()

    # -- OAuth pages -----------------------------------------------------------------

    async def handle_install(self, request: web.Request) -> web.StreamResponse:
        """``GET /slack/install``: the "Add to Slack" page, with a fresh state."""
        return await self._oauth_step(request, install=True)

    async def handle_oauth_redirect(self, request: web.Request) -> web.StreamResponse:
        """``GET /slack/oauth_redirect``: Slack sends the installer back here with a
        code; a reused, unknown or expired state gets a page saying so."""
        return await self._oauth_step(request, install=False)

    async def _oauth_step(self, request: web.Request, *, install: bool) -> web.StreamResponse:
        flow = self.app.oauth_flow
        if flow is None:
            raise web.HTTPNotFound()
        bolt_request = AsyncBoltRequest(
            body="",
            query=request.query_string,
            headers=request.headers,  # type: ignore[arg-type]
        )
        try:
            if install:
                response = await flow.handle_installation(bolt_request)
            else:
                response = await flow.handle_callback(bolt_request)
        except StorageError as exc:
            what = "start" if install else "finish"
            log.error("Slack: could not %s an installation: %s", what, exc)
            return _unavailable()
        return await to_aiohttp_response(response)

    def _require_conversations(self) -> Conversations:
        if self._conversations is None:
            raise RuntimeError("the Slack adapter received an event before start()")
        return self._conversations


def _installation_of(context: AsyncBoltContext) -> tuple[str | None, str | None]:
    """(enterprise id, team id) of the installation a request belongs to; an
    org-wide installation is the org's, whichever workspace the event came from."""
    if context.is_enterprise_install:
        return context.enterprise_id, None
    return context.enterprise_id, context.team_id


def _unavailable() -> web.Response:
    return web.Response(
        status=503,
        text="Deskmate cannot reach its database right now; try the installation again shortly.\n",
    )


async def _close_socket(socket: AsyncSocketModeHandler) -> None:
    """Close the Socket Mode connection, giving Slack SOCKET_CLOSE_TIMEOUT to
    answer the close; past that the connection is dropped."""
    try:
        async with asyncio.timeout(SOCKET_CLOSE_TIMEOUT):
            await socket.close_async()
        return
    except TimeoutError:
        log.warning(
            "Slack: Socket Mode did not answer the close within %.0f s; dropping the connection",
            SOCKET_CLOSE_TIMEOUT,
        )
    except Exception:
        log.exception("Slack: closing the Socket Mode connection failed; dropping it")
    # The SDK's close() stopped at the websocket (cancelling it aborted the
    # connection): end what it would have ended after it.
    client = socket.client
    client.closed = True
    client.auto_reconnect_enabled = False
    for task in (client.message_processor, client.current_session_monitor, client.message_receiver):
        if task is not None:
            task.cancel()
    if client.aiohttp_client_session is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SESSION_CLOSE_TIMEOUT):
                await client.aiohttp_client_session.close()


def _refuse_for_good(exc: SlackApiError, channel: str) -> None:
    """Raise ``Undeliverable`` (saying what the operator can do) for a refusal
    that retrying cannot fix; return for any other, which the outbox retries."""
    error = str(exc.response.get("error") or "")
    if error in _UNDELIVERABLE:
        hint = _HINTS.get(error, "")
        raise Undeliverable(f"Slack refused a message for {channel}: {error}{hint}") from exc


def _actions(buttons: Sequence[tuple[str, str]], ref: ConversationRef) -> dict[str, Any] | None:
    """The actions block for a message in conversation ``ref``; a button Slack
    would refuse is left out and logged (the text still says what to type)."""
    if not buttons:
        return None
    block, refused = command_block(buttons, ref.thread)
    for label, command in refused:
        log.warning(
            "Slack: button %r left out of a message to %s: Slack takes 25 buttons with a "
            "command of 1-2,000 characters (%r); people have to type it",
            label,
            ref.key,
            command[:100],
        )
    return block


def _with_actions(
    blocks: list[dict[str, Any]], actions: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Section blocks with the buttons under them. Without sections (text Slack
    would not take as blocks) the buttons are dropped: blocks would hide the text."""
    return [*blocks, actions] if blocks and actions is not None else blocks


class _ThreadSink:
    """``MessageSink`` for one thread (or DM when ``thread`` is empty); messages are ts.

    The reply's buttons belong under its final message only. Once the stream
    has ended (``final``) every write carries them, which in the usual case
    puts them on the last message with no call of its own; ``finish`` then
    mends what that could not know (a final text that needed no write, or a
    last write that opened one more message).
    """

    def __init__(
        self,
        adapter: SlackAdapter,
        channel: str,
        thread: str,
        team: str = "",
        actions: dict[str, Any] | None = None,
    ) -> None:
        self._adapter = adapter
        self._channel = channel
        self._thread = thread
        self._team = team
        self._actions = actions
        self.final = False
        self._texts: dict[str, str] = {}
        self._keyed: set[str] = set()

    def _now(self) -> dict[str, Any] | None:
        return self._actions if self.final else None

    async def post(self, text: str) -> str:
        actions = self._now()
        ts = await self._adapter._post(
            self._channel, self._thread, text, team=self._team, actions=actions
        )
        self._note(ts, text, actions)
        return ts

    async def update(self, message: str, text: str) -> None:
        actions = self._now()
        await self._adapter._update(self._channel, message, text, team=self._team, actions=actions)
        self._note(message, text, actions)

    def _note(self, ts: str, text: str, actions: dict[str, Any] | None) -> None:
        self._texts[ts] = text
        if actions is not None:
            self._keyed.add(ts)
        else:
            self._keyed.discard(ts)

    async def finish(self, messages: list[str]) -> None:
        """Leave the buttons under the last message alone."""
        if self._actions is None or not messages:
            return
        last = messages[-1]
        for ts in sorted(self._keyed - {last}):
            await self._adapter._paced_update(
                self._team, self._channel, ts, self._texts[ts], actions=None
            )
            self._keyed.discard(ts)
        if last not in self._keyed and last in self._texts:
            await self._adapter._paced_update(
                self._team, self._channel, last, self._texts[last], actions=self._actions
            )
            self._keyed.add(last)


__all__ = ["SlackAdapter", "ThreadMembers"]
