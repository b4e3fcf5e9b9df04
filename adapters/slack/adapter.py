"""The Slack adapter: slack-bolt's AsyncApp over Socket Mode or the HTTP Events API.

Flow for every delivery: Bolt verifies and routes it, the listener stores it
with ``conversations.accept`` (a storage failure fails the delivery so Slack
sends it again), acknowledges, and answers in a background task that streams
the reply into the thread. A redelivered event (HTTP ``X-Slack-Retry-Num`` or
a Socket Mode retry) has the same ``event_id``, so ``accept`` reports it as a
duplicate and nothing is posted twice.

The adapter composes the rooms of ``adapters/slack/``: ``transport`` (how
deliveries arrive), ``workspaces`` (tokens, installs), ``threads`` (which
threads Deskmate is in), ``outbound`` (posting and the outbox's ``Channel``)
and ``replies`` (rendering a reply). Bolt and slack-sdk objects stay inside
``adapters/slack/``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from adapters.common import AnswerTasks, EditPacer
from adapters.slack import modals
from adapters.slack.convert import (
    CLAIM_ACTION,
    COMMAND_ACTION,
    PLATFORM,
    RESOLVE_ACTION,
    Route,
    action_to_inbound,
    command_to_inbound,
    event_to_inbound,
    route_event,
    team_of,
    thread_of,
)
from adapters.slack.oauth import INSTALL_PATH, OAuthConfig, WorkspaceBots
from adapters.slack.outbound import HINTS, Outbound
from adapters.slack.replies import SLASH_COMMAND, Replies
from adapters.slack.threads import Threads
from adapters.slack.transport import (
    SESSION_CLOSE_TIMEOUT,
    close_socket,
    connect_socket,
    dispatch_http,
)
from adapters.slack.workspaces import Installs, Workspaces, oauth_page
from bot.errors import ConfigError
from bot.types import (
    Accepted,
    ConversationRef,
    Conversations,
    Inbound,
    TicketThread,
    Undeliverable,
)

log = logging.getLogger(__name__)

PUBLIC_API_URL = "https://slack.com/api/"
# Shutdown must end well within the 10 s a platform gives after SIGTERM before
# it kills the process: every wait in ``stop`` is bounded. Answers in progress
# get ``shutdown_timeout`` to finish, then are cut off (they stay stored as
# unanswered and are answered at the next start) and get CANCEL_TIMEOUT to
# take their messages back (``replies.CLEANUP_TIMEOUT``) and record that.
CANCEL_TIMEOUT = 2.0


class _DropTokenWarning(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the environment by itself and then warns
    that the client we pass wins; that is intended, so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


_bolt_log = logging.getLogger("adapters.slack.bolt")
_bolt_log.addFilter(_DropTokenWarning())


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
        _check_credentials(bot_token, oauth, app_token, signing_secret)
        base_url = _base_url(api_url)
        self.socket_mode = bool(app_token)
        self._app_token = app_token
        self.client = _web_client(bot_token, base_url, max_retries)
        self.workspaces = Workspaces(
            self.client, bots=WorkspaceBots(oauth.repository) if oauth is not None else None
        )
        self.installs = (
            Installs(oauth, base_url=base_url, workspaces=self.workspaces, logger=_bolt_log)
            if oauth is not None
            else None
        )
        self.app = AsyncApp(
            client=self.client,
            signing_secret=signing_secret,
            request_verification_enabled=not self.socket_mode,
            # Run the listener before answering Slack: the event is stored by the
            # time we say 200, and a storage failure answers 500 so Slack retries.
            process_before_response=True,
            name="deskmate",
            logger=_bolt_log,
            **(self.installs.app_options() if self.installs is not None else {}),
        )
        self._listen()
        self._verifier = SignatureVerifier(signing_secret) if signing_secret else None
        self._socket: AsyncSocketModeHandler | None = None
        self._conversations: Conversations | None = None
        self.outbound = Outbound(self.workspaces, EditPacer(edit_interval))
        self.replies = Replies(self.outbound)
        self.threads = Threads(self.workspaces)
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

    def _listen(self) -> None:
        app = self.app
        if self.installs is not None:
            # Before the catch-all below, which would acknowledge them unheard.
            self.installs.listen(app)
        app.event("app_mention")(self._on_event)
        app.event("message")(self._on_event)
        app.command(SLASH_COMMAND)(self._on_command)
        app.action(re.compile(f"^({CLAIM_ACTION}|{RESOLVE_ACTION})$"))(self._on_ticket_button)
        app.action(re.compile(f"^{COMMAND_ACTION}:[0-9]+$"))(self._on_command_button)
        app.view(modals.EDIT_VIEW)(self._on_edit_submitted)
        app.action(re.compile(".*"))(self._on_other_action)
        # Anything else subscribed to is acknowledged, never answered 404.
        app.event(re.compile(".*"))(self._on_other_event)
        app.error(self._on_error)

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, conversations: Conversations) -> None:
        """Check the token, connect (Socket Mode) and answer events stored but never
        answered before the last stop."""
        via = "Socket Mode" if self.socket_mode else "HTTP Events API at /slack/events"
        if self.installs is None:
            await self._check_token(via)
        else:
            log.info(
                "Slack: serving every workspace that installs the app (%s) via %s",
                INSTALL_PATH,
                via,
            )
            self.installs.purge.start()
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
            await connect_socket(self._socket, app_token=self._app_token, client=self.client)

    async def _check_token(self, via: str) -> None:
        """auth.test with SLACK_BOT_TOKEN: who the bot is, or a ``ConfigError``."""
        try:
            auth = await self.client.auth_test()
        except SlackApiError as exc:
            raise ConfigError(
                f"Slack refused SLACK_BOT_TOKEN ({exc.response.get('error')}); "
                "copy the Bot User OAuth Token (xoxb-...) from the app's settings"
            ) from exc
        self.workspaces.bot_user_id = str(auth.get("user_id") or "")
        self.workspaces.bot_id = str(auth.get("bot_id") or "")
        log.info(
            "Slack: connected as %s (%s) in team %s via %s",
            auth.get("user"),
            self.workspaces.bot_user_id,
            auth.get("team_id"),
            via,
        )

    async def stop(self) -> None:
        """Stop taking events and let answers in progress finish, every wait bounded.

        The websocket is closed while the answers finish: Slack not answering
        the close must not eat the answers' time.
        """
        self._stopping = True
        socket, self._socket = self._socket, None
        closing = asyncio.create_task(close_socket(socket)) if socket is not None else None
        try:
            if self.installs is not None:
                await self.installs.purge.stop()
            await self.answers.drain()
        finally:
            if closing is not None:
                await closing
            self.workspaces.clear()
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

    # -- Channel (the outbox) ----------------------------------------------------------

    async def send(self, ref: ConversationRef, text: str) -> None:
        """Post ``text`` (split to Slack's limits) into the conversation's thread."""
        await self.outbound.send(ref, text)

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
        return await self.outbound.post(ref, text, reply_to=reply_to, buttons=buttons)

    async def edit(
        self,
        ref: ConversationRef,
        message: str,
        text: str,
        *,
        buttons: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Replace the text and buttons of message ``message`` (chat.update, paced
        per channel and workspace)."""
        await self.outbound.edit(ref, message, text, buttons=buttons)

    @property
    def edit_interval(self) -> float:
        return self.outbound.pacer.interval

    async def open_ticket(
        self, space: ConversationRef, *, title: str, text: str, ticket_id: int
    ) -> TicketThread:
        """Post a ticket at the top of the support channel, with Claim and Resolve
        buttons; agents answer in its thread."""
        return await self.outbound.open_ticket(space, title=title, text=text, ticket_id=ticket_id)

    # -- HTTP endpoints ----------------------------------------------------------------

    async def handle_http(self, request: web.Request) -> web.StreamResponse:
        """``POST /slack/events``: verify, hand to Bolt, answer with Bolt's response."""
        return await dispatch_http(
            request,
            app=self.app,
            verifier=self._verifier,
            ready=lambda: self._conversations is not None and not self._stopping,
        )

    async def handle_install(self, request: web.Request) -> web.StreamResponse:
        """``GET /slack/install``: the "Add to Slack" page, with a fresh state."""
        return await oauth_page(self.app, request, install=True)

    async def handle_oauth_redirect(self, request: web.Request) -> web.StreamResponse:
        """``GET /slack/oauth_redirect``: Slack sends the installer back here with a
        code; a reused, unknown or expired state gets a page saying so."""
        return await oauth_page(self.app, request, install=False)

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
        bot_user_id, bot_id = await self.workspaces.identity(team)
        route = route_event(body, bot_user_id=bot_user_id, bot_id=bot_id, listening=listening)
        if route is Route.THREAD and not await self.threads.includes(
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
        self,
        body: dict[str, Any],
        ack: Callable[..., Awaitable[Any]],
        client: AsyncWebClient | None = None,
    ) -> None:
        """A click on a reply's or a notice's button: its command, sent by the
        clicker into the conversation, stored before Slack is acknowledged. A
        suggestion's Edit opens a modal instead (its submission is the command)."""
        conversations = self._require_conversations()
        try:
            inbound = action_to_inbound(body)
        except ValueError as exc:
            log.warning("Slack: ignored a malformed button click: %s", exc)
            await ack()
            return
        suggestion = modals.edit_request(inbound.text)
        if suggestion is not None and client is not None:
            await ack()
            message = body.get("message") if isinstance(body.get("message"), dict) else {}
            language = await conversations.staff_language(inbound.ref)
            view = modals.edit_view(suggestion, inbound, str(message.get("text") or ""), language)
            try:
                await client.views_open(trigger_id=str(body.get("trigger_id") or ""), view=view)
                return
            except SlackApiError as exc:
                # The trigger lapsed (Slack gives 3 s): the typed way is said instead.
                log.warning("Slack: could not open the edit dialog: %s", exc)
            await self._store_and_answer(conversations, inbound, _acked)
            return
        await self._store_and_answer(conversations, inbound, ack)

    async def _on_edit_submitted(
        self, body: dict[str, Any], ack: Callable[..., Awaitable[Any]]
    ) -> None:
        """A suggestion's edit submitted in the modal: sent as ``/suggest edit N TEXT``."""
        conversations = self._require_conversations()
        try:
            inbound = modals.submission_to_inbound(body)
        except ValueError as exc:
            log.warning("Slack: ignored a malformed edit: %s", exc)
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
                await conversations.process(accepted, self.replies.to_command(inbound))
            else:
                if not inbound.meta.get("space"):
                    # In a support space the relay is the sign it was read;
                    # a reaction on every agent's line would be noise. Not
                    # awaited before ``process``: the conversation's turn is
                    # taken in the order the events came, and a slow reaction
                    # must not let the thread's next message go first.
                    seen = asyncio.create_task(self.replies.react(inbound))
                await conversations.process(accepted, self.replies.in_thread(inbound))
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
                HINTS.get(error, ""),
            )
        finally:
            if seen is not None and not seen.done():
                seen.cancel()

    def _require_conversations(self) -> Conversations:
        if self._conversations is None:
            raise RuntimeError("the Slack adapter received an event before start()")
        return self._conversations


def _check_credentials(
    bot_token: str, oauth: OAuthConfig | None, app_token: str, signing_secret: str
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


def _base_url(api_url: str) -> str:
    base_url = api_url or PUBLIC_API_URL
    # slack-sdk appends the method name directly
    return base_url if base_url.endswith("/") else base_url + "/"


def _web_client(bot_token: str, base_url: str, max_retries: int) -> AsyncWebClient:
    """The Web API client of SLACK_BOT_TOKEN (with OAuth, of no token: each
    workspace's calls go through ``Workspaces.client_for``, sharing its session)."""
    return AsyncWebClient(
        token=bot_token or None,
        base_url=base_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=max_retries),
            # Honours Retry-After on HTTP 429.
            AsyncRateLimitErrorRetryHandler(max_retry_count=max_retries),
        ],
    )


__all__ = ["SlackAdapter"]


async def _acked(*_args: Any, **_kwargs: Any) -> None:
    """Slack was acknowledged before (the click opened, or tried to open, a dialog)."""
