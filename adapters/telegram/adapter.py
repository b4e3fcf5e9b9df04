"""The Telegram adapter: polling with a durable inbox, or a webhook.

An update is confirmed to Telegram only after it is stored. In polling mode
the confirmation is the next ``getUpdates`` offset, which this adapter
advances past an update only once ``conversations.accept`` returned; in
webhook mode it is the 200 answer, sent only after ``accept``. Stored but
unanswered updates (a crash, a kill, a SIGTERM past the stop bound) are
answered at the next start from ``conversations.pending_of_tenant``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from telegram import Bot, BotCommand, Update
from telegram.error import (
    BadRequest,
    Conflict,
    InvalidToken,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest

from adapters.common import AnswerTasks
from adapters.telegram.convert import (
    ALLOWED_UPDATES,
    BotIdentity,
    ChatMoved,
    Ignored,
    MembershipChanged,
    Pressed,
    classify_update,
)
from adapters.telegram.pacing import ChatLimiter
from adapters.telegram.render import (
    ChatGone,
    DeliveryError,
    DeliveryUncertain,
    ReplyView,
    Sender,
    Target,
    inline_keyboard,
    seconds,
)
from adapters.telegram.text import split_message
from bot.errors import ConfigError, DeskmateError, StorageError
from bot.language import SUPPORTED_LANGUAGES
from bot.types import (
    Accepted,
    ConversationRef,
    Conversations,
    DeliveryUnconfirmed,
    Inbound,
    TicketThread,
    Undeliverable,
)

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.telegram.org"
WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
_COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
TOPIC_NAME_LIMIT = 128
# What PTB's ``Update.de_json`` raises for a payload of the wrong shape: a
# required field missing, a field of the wrong type, a date out of range.
_PARSE_ERRORS = (AttributeError, KeyError, OverflowError, TypeError, ValueError)
# Refusals that no retry can fix: the group or the ticket's topic is gone.
_GONE_REQUESTS = ("chat not found", "message thread not found")
TOKEN_REVOKED = (
    "Telegram refused TELEGRAM_BOT_TOKEN while polling (401 Unauthorized): the token was "
    "revoked or regenerated in @BotFather. Telegram is stopped in this process (other "
    "platforms keep running and /healthz reports telegram unavailable). Put the bot's current "
    "token (@BotFather, /mybots, API Token) in TELEGRAM_BOT_TOKEN and restart Deskmate."
)
POLL_CONFLICT = (
    "Telegram refused getUpdates with 409 Conflict (%s): another process is polling this bot "
    "with the same token, or a webhook is set for it elsewhere (another deployment, or "
    "setWebhook called by hand). Telegram gives updates to one consumer only. Stop the other "
    "poller, or remove that webhook (deleteWebhook), or set TELEGRAM_WEBHOOK_URL here to "
    "serve the webhook instead of polling. Retrying."
)


class TelegramUnavailable(DeskmateError):
    """The Bot API could not be reached or refused to set up updates."""


class TelegramAdapter:
    """Serves one Telegram bot. Holds a PTB ``Bot`` for the wire protocol."""

    name = "telegram"

    def __init__(
        self,
        *,
        token: str,
        api_url: str = "",
        webhook_url: str = "",
        webhook_secret: str = "",
        edit_interval: float = 1.5,
        typing_interval: float = 4.0,
        poll_timeout: int = 25,
        per_chat_interval: float = 1.0,
        group_interval: float | None = 3.0,
        global_rate: float = 30.0,
        stop_timeout: float = 20.0,
        request_timeout: float = 10.0,
        retry_delay: float = 1.0,
    ) -> None:
        _check_credentials(token, webhook_url, webhook_secret)
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self.bot = _bot(token, self.api_url, request_timeout)
        self.webhook_url = webhook_url
        self._secret = webhook_secret.encode()
        self.edit_interval = edit_interval
        self.typing_interval = typing_interval
        # The Bot API wants whole seconds here.
        self.poll_timeout = int(poll_timeout)
        self.retry_delay = retry_delay
        self.limiter = ChatLimiter(
            per_chat_interval=per_chat_interval,
            group_interval=group_interval,
            global_rate=global_rate,
        )
        self.sender = Sender(
            bot=self.bot, limiter=self.limiter, on_migrated=self._moved, retry_delay=retry_delay
        )
        self.me: BotIdentity | None = None
        self._conversations: Conversations | None = None
        self._ready = asyncio.Event()
        self._stopping = False
        self._poller: asyncio.Task[None] | None = None
        self._fetching = False
        self._offset: int | None = None
        # Why Telegram stopped for good in this process (a revoked token); /healthz shows it.
        self.failure = ""
        self.answers = AnswerTasks(
            platform=self.name, answer=self._answer, drain_timeout=stop_timeout
        )
        self._migrated: dict[int, int] = {}
        # getChat's ``is_forum`` per support group, asked once.
        self._forums: dict[int, bool] = {}
        # Topics opened for tickets whose ticket message is not sent yet, so a
        # retried ``open_ticket`` does not open a second topic.
        self._ticket_topics: dict[int, int] = {}
        # Answers to button presses, sent beside the ingest so that storing
        # the next update (and the webhook's 200) never waits on them.
        self._presses: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------

    async def start(self, conversations: Conversations) -> None:
        """Connect, publish the command menu, answer what a previous run left
        unanswered, then poll (or wait for webhook calls)."""
        self._conversations = conversations
        await self._connect()
        self.me = BotIdentity(self.bot.id, self.bot.username)
        log.info("telegram bot @%s (%s) connected", self.me.username, self.me.id)
        await self._publish_commands(conversations)
        if not self.webhook_url:
            # Telegram serves getUpdates to one consumer; a second one would
            # steal updates from the first.
            await conversations.take_lease(
                f"telegram-poll:{self.me.id}", purpose="Telegram long polling"
            )
        # Claim the leftovers before webhook calls are let in, so a row is never
        # answered by the replay and a redelivery at once; let them in before
        # registering the webhook, so its first calls are not refused.
        pending = await self.answers.claim_pending(conversations, tenant=str(self.me.id))
        self._ready.set()
        try:
            if self.webhook_url:
                await self.bot.set_webhook(
                    self.webhook_url,
                    secret_token=self._secret.decode(),
                    allowed_updates=list(ALLOWED_UPDATES),
                )
                log.info("telegram webhook set to %s", self.webhook_url)
            else:
                # getUpdates is refused while a webhook is registered.
                await self.bot.delete_webhook(drop_pending_updates=False)
        except BadRequest as exc:
            raise ConfigError(f"Telegram refused TELEGRAM_WEBHOOK_URL: {exc.message}") from exc
        except TelegramError as exc:
            raise TelegramUnavailable(f"could not set up Telegram updates: {exc.message}") from exc
        self.answers.replay(pending)
        if not self.webhook_url:
            self._poller = asyncio.create_task(self._poll(), name="telegram-poll")

    async def _connect(self, attempts: int = 3) -> None:
        """getMe, retried a little: a blip at boot should not stop the bot."""
        for attempt in range(1, attempts + 1):
            try:
                await self.bot.initialize()
                return
            except InvalidToken as exc:
                raise ConfigError(f"Telegram refused TELEGRAM_BOT_TOKEN: {exc.message}") from exc
            except TelegramError as exc:
                if attempt == attempts:
                    raise TelegramUnavailable(
                        f"could not reach the Telegram Bot API at {self.api_url}: {exc.message}"
                        " (check TELEGRAM_API_URL and the network)"
                    ) from exc
                log.warning("telegram getMe failed (%s); retrying", exc.message)
                await asyncio.sleep(self.retry_delay * attempt)

    async def health(self) -> None:
        """A ``/healthz`` check: raises once Telegram stopped for good."""
        if self.failure:
            raise TelegramUnavailable(self.failure)

    async def stop(self) -> None:
        """Stop taking updates, finish replies in hand (bounded), disconnect.

        Replies still running after ``stop_timeout`` are cancelled; they stay
        stored as unanswered and are answered at the next start.
        """
        self._stopping = True
        if self._poller is not None:
            if self._fetching:
                self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._poller, self.answers.drain_timeout)
        await self.answers.drain()
        if self._presses:
            await asyncio.wait(self._presses, timeout=2.0)
        if self._offset is not None and not self.webhook_url:
            # Confirm what was stored so the next start does not fetch it again.
            with contextlib.suppress(TelegramError):
                await self.bot.get_updates(offset=self._offset, timeout=0, limit=1)
        with contextlib.suppress(TelegramError):
            await self.bot.shutdown()

    # -- inbound -----------------------------------------------------------------

    async def _poll(self) -> None:
        failures = 0
        while not self._stopping:
            self._fetching = True
            try:
                updates = await self.bot.get_updates(
                    offset=self._offset,
                    timeout=self.poll_timeout,
                    allowed_updates=list(ALLOWED_UPDATES),
                )
            except TimedOut:
                continue  # a long poll that outlived the connection; ask again
            except RetryAfter as exc:
                await asyncio.sleep(seconds(exc.retry_after))
                continue
            except InvalidToken:
                # No retry brings a revoked token back; polling on would only
                # hammer Telegram and hide the cause in a stream of retries.
                self.failure = TOKEN_REVOKED
                log.error(TOKEN_REVOKED)
                return
            except Conflict as exc:
                failures += 1
                if failures == 1 or failures % 10 == 0:
                    log.error(POLL_CONFLICT, exc.message)
                await asyncio.sleep(min(30.0, self.retry_delay * 2 ** min(failures, 5)))
                continue
            except TelegramError as exc:  # network down, 5xx: PTB raises NetworkError for both
                failures += 1
                log.error("telegram getUpdates failed (%s); retrying", exc)
                await asyncio.sleep(min(30.0, self.retry_delay * 2 ** min(failures, 5)))
                continue
            finally:
                self._fetching = False
            failures = 0
            for update in updates:
                if self._stopping:
                    return
                try:
                    await self._ingest(update)
                except StorageError:
                    # Not stored, so not confirmed: Telegram sends it again.
                    log.exception(
                        "telegram update %s not stored; will fetch it again", update.update_id
                    )
                    await asyncio.sleep(self.retry_delay)
                    break
                except Exception:
                    # An update this code cannot handle must not block the ones after it.
                    log.exception(
                        "telegram update %s could not be handled; skipped", update.update_id
                    )
                self._offset = update.update_id + 1

    async def _ingest(self, update: Update | dict[str, Any]) -> None:
        """Store one update (raises ``StorageError``) and start answering it."""
        assert self._conversations is not None and self.me is not None
        result = classify_update(update, me=self.me, listens_to=self._conversations.listens_to)
        if isinstance(result, Inbound):
            accepted = await self._conversations.accept(result)
            if not accepted.duplicate:
                self.answers.spawn(accepted)
        elif isinstance(result, Pressed):
            # Stored before anything else, like a typed command: a press is never lost.
            accepted = await self._conversations.accept(result.inbound)
            if not accepted.duplicate:
                self.answers.spawn(accepted)
            task = asyncio.create_task(self._pressed(result, first=not accepted.duplicate))
            self._presses.add(task)
            task.add_done_callback(self._presses.discard)
        elif isinstance(result, Ignored):
            log.debug("telegram update %s ignored: %s", result.update_id, result.reason)
        elif isinstance(result, ChatMoved):
            await self._moved(result.old, result.new)
        elif isinstance(result, MembershipChanged):
            log.info(
                "telegram: bot %s in %s",
                "allowed" if result.active else "removed/blocked",
                result.ref.key,
            )
            try:
                await self._conversations.set_active(result.ref, result.active)
            except StorageError:
                log.exception("could not record membership change of %s", result.ref.key)

    async def _pressed(self, pressed: Pressed, *, first: bool) -> None:
        """Stop the presser's spinner; in a private chat also take the keyboard
        away, so the choice reads as made (in a group others may still need it).
        A redelivered press is answered again in case the first answer was lost;
        Telegram refuses that harmlessly."""
        target = self._target(pressed.inbound.ref)
        try:
            await self.sender.answer_query(pressed.query)
            private = pressed.inbound.meta.get("chat_type") == "private"
            if first and private and pressed.message:
                await self.sender.set_markup(target, pressed.message, None)
        except (TelegramError, DeliveryError) as exc:
            log.info("telegram: after a button press in %s: %s", target.ref.key, exc)

    async def handle_webhook(self, request: web.Request) -> web.StreamResponse:
        """``POST /telegram/webhook``: 403 without the right secret, 415 for a
        body that is not JSON, 200 only once the update is stored, 500 if
        storing failed (Telegram retries)."""
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not self._secret or not hmac.compare_digest(given, self._secret):
            log.warning(
                "telegram webhook call with a wrong or missing secret from %s", request.remote
            )
            return web.json_response({"error": "forbidden"}, status=403)
        if request.content_type != "application/json":
            # Telegram always sends JSON: anything else is not an update.
            log.warning("telegram webhook call with Content-Type %r refused", request.content_type)
            return web.json_response({"error": "send application/json"}, status=415)
        if not self._ready.is_set() or self._stopping:
            return web.json_response({"error": "starting or stopping"}, status=503)
        try:
            data = await request.json()
        # LookupError: the request declared a charset Python does not know.
        except (json.JSONDecodeError, UnicodeDecodeError, LookupError):
            return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            return web.json_response({"error": "not a Telegram update"}, status=400)
        try:
            update = Update.de_json(data, self.bot)
        except _PARSE_ERRORS:
            log.warning("telegram webhook: unreadable update %r", data.get("update_id"))
            return web.json_response({"error": "not a Telegram update"}, status=400)
        try:
            await self._ingest(update)
        except StorageError:
            log.exception(
                "telegram update %s not stored; asking Telegram to resend", update.update_id
            )
            return web.json_response({"error": "storage unavailable"}, status=500)
        except Exception:
            # Resending an update this code cannot handle would not help.
            log.exception("telegram update %s could not be handled; dropped", update.update_id)
        return web.json_response({})

    # -- outbound ----------------------------------------------------------------

    async def _answer(self, accepted: Accepted) -> None:
        """Answer one stored update (run by ``self.answers``, which logs failures)."""
        assert self._conversations is not None
        inbound = accepted.inbound
        meta = dict(inbound.meta)
        target = self._target(inbound.ref)
        in_group = meta.get("chat_type") in ("group", "supergroup")
        view = ReplyView(
            sender=self.sender,
            target=target,
            reply_to=meta.get("message_id") if in_group else None,
            after=meta.get("message_id"),
            edit_interval=self.edit_interval,
            typing_interval=self.typing_interval,
            on_gone=self._gone,
        )
        await self._conversations.process(accepted, view.render)

    def _target(self, ref: ConversationRef) -> Target:
        target = Target.from_ref(ref)
        moved = self._migrated.get(target.chat_id)
        if moved is not None:
            target.chat_id, target.thread_id = moved, None
            target.ref = ConversationRef(ref.platform, ref.tenant, str(moved), "")
        return target

    async def send(self, ref: ConversationRef, text: str) -> None:
        """Send a message that is not a reply (a relayed agent answer, a broadcast).

        Raises ``ChatGone`` if the user blocked the bot (the conversation is
        marked inactive) and ``DeliveryError`` for other failures.
        """
        target = self._target(ref)
        try:
            for piece in split_message(text):
                await self.sender.send_text(target, piece)
        except ChatGone:
            await self._gone(target.ref)
            raise
        except TelegramError as exc:
            raise DeliveryError(f"sending to {ref.key}: {exc.message}") from exc

    async def post(
        self,
        ref: ConversationRef,
        text: str,
        *,
        reply_to: str = "",
        buttons: Sequence[tuple[str, str]] = (),
    ) -> str:
        """Send ``text`` into ``ref``'s chat (into its forum topic when it names
        one), the first message quoting message ``reply_to`` when given, the
        last one carrying ``buttons`` as an inline keyboard; returns the id of
        the first message sent.

        Raises ``Undeliverable`` when the chat will never take it (the bot was
        blocked or removed, the chat or the topic is gone), and
        ``DeliveryUnconfirmed`` when it may be in the chat although the send
        failed: a timeout after the request went out (the Bot API has no call
        that reads a message, and an edit to find it would overwrite whatever
        other message holds that id), or a later part failing after the first
        arrived. Other failures, where nothing arrived, propagate for the
        outbox to retry.
        """
        target = self._target(ref)
        quote = int(reply_to) if reply_to else None
        markup = inline_keyboard(buttons, where=ref.key)
        first = ""
        pieces = split_message(text)
        try:
            for i, piece in enumerate(pieces):
                message_id, _ = await self.sender.send_text(
                    target, piece, reply_to=quote, markup=markup if i == len(pieces) - 1 else None
                )
                first, quote = first or str(message_id), None
        except ChatGone as exc:
            await self._gone(target.ref)
            raise Undeliverable(str(exc)) from exc
        except DeliveryUncertain as exc:
            raise DeliveryUnconfirmed(f"sending to {ref.key}: {exc}") from exc
        except (TelegramError, DeliveryError) as exc:
            if isinstance(exc, BadRequest) and _is_gone(exc):
                raise Undeliverable(f"sending to {ref.key}: {exc.message}") from exc
            if first:
                raise DeliveryUnconfirmed(
                    f"sending to {ref.key}: a later part of {len(pieces)} failed after the "
                    f"first arrived ({exc})"
                ) from exc
            raise
        return first

    async def edit(
        self,
        ref: ConversationRef,
        message: str,
        text: str,
        *,
        buttons: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Replace the text and inline keyboard of message ``message`` (editMessageText,
        paced per chat like every send). Raises ``Undeliverable`` when the text
        no longer fits one message or the message or chat is gone: the caller
        posts it instead."""
        pieces = split_message(text)
        if len(pieces) != 1:
            raise Undeliverable(f"editing {ref.key}: the text needs {len(pieces)} messages")
        target = self._target(ref)
        markup = inline_keyboard(buttons, where=ref.key)
        try:
            await self.sender.edit_text(target, int(message), pieces[0], plain=False, markup=markup)
        except ChatGone as exc:
            await self._gone(target.ref)
            raise Undeliverable(str(exc)) from exc
        except BadRequest as exc:
            if _is_gone(exc) or "message to edit not found" in exc.message.lower():
                raise Undeliverable(f"editing {ref.key}: {exc.message}") from exc
            raise

    async def open_ticket(
        self, space: ConversationRef, *, title: str, text: str, ticket_id: int
    ) -> TicketThread:
        """Post a ticket into a support group: into a topic of its own where the
        group has topics, else as a message agents reply to."""
        target = self._target(ConversationRef(space.platform, space.tenant, space.chat))
        thread = await self._ticket_topic(target, title or f"Ticket #{ticket_id}", ticket_id)
        where = ConversationRef(
            space.platform, space.tenant, str(target.chat_id), str(thread) if thread else ""
        )
        message = await self.post(where, text)
        self._ticket_topics.pop(ticket_id, None)
        return TicketThread(thread=where.thread, message=message)

    async def _ticket_topic(self, target: Target, title: str, ticket_id: int) -> int | None:
        """The forum topic for a ticket; None where the group has no topics or
        the bot may not open one."""
        if ticket_id in self._ticket_topics:
            return self._ticket_topics[ticket_id]
        chat_id = target.chat_id
        try:
            if chat_id not in self._forums:
                self._forums[chat_id] = await self.sender.is_forum(target)
            if not self._forums[chat_id]:
                return None
            thread = await self.sender.create_topic(target, title[:TOPIC_NAME_LIMIT])
        except ChatGone as exc:
            raise Undeliverable(str(exc)) from exc
        except BadRequest as exc:
            if _is_gone(exc):
                raise Undeliverable(f"support group {chat_id}: {exc.message}") from exc
            if "not a forum" in exc.message.lower():
                self._forums[chat_id] = False
                log.info("telegram: support group %s no longer has topics", chat_id)
                return None
            log.warning(
                "telegram: Telegram refused to open a topic for ticket #%s in the support "
                "group %s (%s). Make the bot an admin there with the 'Manage topics' right "
                "so each ticket gets its own topic; posting the ticket as a plain message "
                "that agents reply to instead.",
                ticket_id,
                chat_id,
                exc.message,
            )
            return None
        self._ticket_topics[ticket_id] = thread
        return thread

    async def _gone(self, ref: ConversationRef) -> None:
        if self._conversations is None:
            return
        try:
            await self._conversations.set_active(ref, False)
        except StorageError:
            log.exception("could not mark %s inactive", ref.key)

    async def _moved(self, old: ConversationRef, new: ConversationRef) -> None:
        self._migrated[int(old.chat)] = int(new.chat)
        if self._conversations is None:
            return
        try:
            await self._conversations.move_conversation(old, new)
        except StorageError:
            log.exception("could not move conversation %s to %s", old.key, new.key)

    async def _publish_commands(self, conversations: Conversations) -> None:
        """The command menu: the deployment's language for everyone, and one
        list per shipped language for users whose app is set to it."""
        for code in (None, *SUPPORTED_LANGUAGES):
            commands = []
            for entry in conversations.menu(code):
                if not _COMMAND_NAME.fullmatch(entry.name) or not entry.description:
                    if code is None:
                        log.warning("command /%s cannot appear in Telegram's menu", entry.name)
                    continue
                commands.append(BotCommand(entry.name, entry.description[:256]))
            try:
                await self.bot.set_my_commands(commands, language_code=code)
            except TelegramError as exc:
                log.warning("telegram setMyCommands (%s) failed: %s", code or "all", exc.message)


def _check_credentials(token: str, webhook_url: str, webhook_secret: str) -> None:
    if not token:
        raise ConfigError("TELEGRAM_BOT_TOKEN is empty")
    if webhook_url and not webhook_secret:
        raise ConfigError("TELEGRAM_WEBHOOK_URL needs TELEGRAM_WEBHOOK_SECRET")
    if webhook_secret and not _SECRET.fullmatch(webhook_secret):
        raise ConfigError(
            "TELEGRAM_WEBHOOK_SECRET may only use A-Z, a-z, 0-9, _ and - "
            "(1 to 256 characters); Telegram refuses anything else"
        )


def _bot(token: str, api_url: str, request_timeout: float) -> Bot:
    """PTB's ``Bot`` for the Bot API at ``api_url``, every wait bounded by ``request_timeout``."""
    return Bot(
        token,
        base_url=f"{api_url}/bot",
        request=HTTPXRequest(
            connection_pool_size=64,
            read_timeout=request_timeout,
            write_timeout=request_timeout,
            connect_timeout=request_timeout,
            pool_timeout=request_timeout,
        ),
        # getUpdates adds the long-poll timeout to this read timeout itself.
        get_updates_request=HTTPXRequest(
            connection_pool_size=1,
            read_timeout=request_timeout,
            connect_timeout=request_timeout,
        ),
    )


def _is_gone(exc: BadRequest) -> bool:
    return any(text in exc.message.lower() for text in _GONE_REQUESTS)
