"""Outgoing calls and streamed rendering of replies.

``Sender`` wraps the PTB ``Bot`` calls with the platform rules: pacing, 429
pauses per chat, group migration, blocked users, and no blind resend of a
message whose fate is unknown. ``ReplyView`` turns one ``Reply`` stream into
Telegram messages with the shared ``StreamRenderer``, adding what is
Telegram's own: typing while the model works, splitting at 4096 UTF-16 units,
HTML with a plain-text fallback, and quoting the question in groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import httpx
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters
from telegram.constants import ChatAction, ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    NetworkError,
    RetryAfter,
)

from adapters.common import EditPacer, MessageLost, StreamRenderer
from adapters.telegram.convert import keyboard
from adapters.telegram.pacing import ChatLimiter
from adapters.telegram.text import MESSAGE_LIMIT, split_first, to_html
from bot.errors import DeskmateError
from bot.types import ConversationRef, Reply

log = logging.getLogger(__name__)

T = TypeVar("T")

# Errors of httpx that prove the request never reached Telegram, so a resend
# cannot duplicate a message.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# How many message ids after the last known one are asked about when a send's
# fate is unknown; each question is a paced call.
PROBE_LIMIT = 10
# Message ids this process sent, per chat, kept to tell them from a lost send.
_KNOWN_PER_CHAT = 200


class DeliveryError(DeskmateError):
    """A message could not be delivered to Telegram."""


class ChatGone(DeliveryError):
    """The user blocked the bot or the bot was removed from the chat (403)."""


class DeliveryUncertain(DeliveryError):
    """A send failed in a way that may or may not have delivered it, and asking
    Telegram did not tell which; not retried."""

    # Whether the lost send was plain text (else HTML), to ask for the same text.
    plain: bool = False


@dataclass(slots=True)
class Target:
    """Where messages go; ``chat_id`` changes if the group migrates."""

    ref: ConversationRef
    chat_id: int
    thread_id: int | None = None

    @classmethod
    def from_ref(cls, ref: ConversationRef) -> Target:
        thread = int(ref.thread) if ref.thread else None
        return cls(ref=ref, chat_id=int(ref.chat), thread_id=thread)


OnMigrated = Callable[[ConversationRef, ConversationRef], Awaitable[None]]


def seconds(value: int | float | dtm.timedelta) -> float:
    """``RetryAfter.retry_after`` in seconds (PTB gives an int or a timedelta)."""
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


def inline_keyboard(
    buttons: Sequence[tuple[str, str]], *, where: str = ""
) -> InlineKeyboardMarkup | None:
    """The inline keyboard for (label, command) buttons; None when there are none.

    A button Telegram would refuse (its command over 64 bytes) is left out and
    logged: the message text still says what to type.
    """
    rows, refused = keyboard(buttons)
    for label, command in refused:
        log.warning(
            "telegram: button %r left out of a message%s: its command %r is not 1-64 bytes "
            "(Telegram's limit on callback_data; a message takes at most 100 buttons), so "
            "people have to type it",
            label,
            f" to {where}" if where else "",
            command,
        )
    if not rows:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(label, callback_data=data) for label, data in row] for row in rows]
    )


def _is_not_modified(exc: BadRequest) -> bool:
    return "message is not modified" in exc.message.lower()


def _is_parse_error(exc: BadRequest) -> bool:
    return "can't parse entities" in exc.message.lower()


def _is_not_found(exc: BadRequest) -> bool:
    return "message to edit not found" in exc.message.lower()


def _is_not_editable(exc: BadRequest) -> bool:
    return "message can't be edited" in exc.message.lower()


class Sender:
    """The bot's outgoing calls with Telegram's rules applied."""

    def __init__(
        self,
        *,
        bot: Bot,
        limiter: ChatLimiter,
        on_migrated: OnMigrated,
        max_flood_waits: int = 5,
        max_network_retries: int = 3,
        retry_delay: float = 0.5,
    ) -> None:
        self.bot = bot
        self.limiter = limiter
        self._on_migrated = on_migrated
        self._max_flood_waits = max_flood_waits
        self._max_network_retries = max_network_retries
        self._retry_delay = retry_delay
        self._sent: dict[int, dict[int, None]] = {}

    def _remember(self, chat_id: int, message_id: int) -> None:
        known = self._sent.setdefault(chat_id, {})
        known[message_id] = None
        if len(known) > _KNOWN_PER_CHAT:
            del known[next(iter(known))]
        if len(self._sent) > 10_000:
            del self._sent[next(iter(self._sent))]

    async def _call(
        self,
        target: Target,
        op: Callable[[int], Awaitable[T]],
        *,
        what: str,
        idempotent: bool,
        paced: bool = True,
    ) -> T:
        floods = network = migrations = 0
        while True:
            await self.limiter.acquire(target.chat_id, paced=paced)
            try:
                return await op(target.chat_id)
            except RetryAfter as exc:
                # 429: nothing was done, so a retry is safe; only this chat waits.
                wait = seconds(exc.retry_after)
                self.limiter.penalize(target.chat_id, wait)
                floods += 1
                log.warning(
                    "telegram %s to chat %s: flood control, waiting %.1fs",
                    what,
                    target.chat_id,
                    wait,
                )
                if floods > self._max_flood_waits:
                    raise DeliveryError(f"{what}: still rate limited after {floods} waits") from exc
            except ChatMigrated as exc:
                migrations += 1
                if migrations > 2:
                    raise DeliveryError(f"{what}: chat keeps migrating") from exc
                await self._migrate(target, int(exc.new_chat_id))
            except Forbidden as exc:
                raise ChatGone(f"{what} to chat {target.chat_id}: {exc.message}") from exc
            except BadRequest:
                raise
            except NetworkError as exc:  # TimedOut included
                cause = exc.__cause__
                if not (idempotent or isinstance(cause, _NOT_SENT)):
                    # The request may have reached Telegram; a resend could
                    # show the customer the same message twice.
                    raise DeliveryUncertain(
                        f"{what} to chat {target.chat_id}: {exc.message}; not resent"
                    ) from exc
                network += 1
                if network > self._max_network_retries:
                    raise DeliveryError(f"{what} to chat {target.chat_id}: {exc.message}") from exc
                log.warning(
                    "telegram %s to chat %s failed (%s), retrying",
                    what,
                    target.chat_id,
                    exc.message,
                )
                await asyncio.sleep(self._retry_delay * network)

    async def _migrate(self, target: Target, new_chat_id: int) -> None:
        old = target.ref
        new = replace(old, chat=str(new_chat_id), thread="")
        log.info("telegram chat %s migrated to %s", target.chat_id, new_chat_id)
        target.ref, target.chat_id, target.thread_id = new, new_chat_id, None
        await self._on_migrated(old, new)

    async def send_text(
        self,
        target: Target,
        text: str,
        *,
        reply_to: int | None = None,
        after: int | None = None,
        markup: InlineKeyboardMarkup | None = None,
    ) -> tuple[int, bool]:
        """Send one message (at most 4096 UTF-16 units of visible text), with
        ``markup`` (an inline keyboard) under it when given.

        Tries HTML first; if Telegram cannot parse the entities, sends the
        plain text. Returns ``(message_id, plain)``.

        ``after`` is the id of the latest message known in the chat before this
        one. When the send's fate is unknown (it timed out after reaching
        Telegram), the ids after it are asked about: the message found there is
        the one sent; when it is not there the send is repeated. Without
        ``after``, or when asking does not settle it, ``DeliveryUncertain``.
        """
        for attempt in (1, 2):
            try:
                message_id, plain = await self._send_once(
                    target, text, reply_to=reply_to, markup=markup
                )
            except DeliveryUncertain as exc:
                if after is None or attempt == 2:
                    raise
                log.warning("%s; asking Telegram whether it arrived", exc)
                found = await self._find_sent(target, after, text, plain=exc.plain, markup=markup)
                if found is None:
                    log.info(
                        "the lost message never reached chat %s; sending it again", target.chat_id
                    )
                    continue
                log.info("the lost message arrived in chat %s as %s", target.chat_id, found)
                message_id, plain = found, exc.plain
            self._remember(target.chat_id, message_id)
            return message_id, plain
        raise AssertionError("unreachable")

    async def _send_once(
        self,
        target: Target,
        text: str,
        *,
        reply_to: int | None,
        markup: InlineKeyboardMarkup | None,
    ) -> tuple[int, bool]:
        async def send(chat_id: int, *, plain: bool) -> int:
            # After a migration the old message id means nothing in the new chat.
            quote = reply_to if chat_id == first_chat else None
            message = await self.bot.send_message(
                chat_id=chat_id,
                text=text if plain else to_html(text),
                parse_mode=None if plain else ParseMode.HTML,
                message_thread_id=target.thread_id,
                reply_parameters=(
                    ReplyParameters(message_id=quote, allow_sending_without_reply=True)
                    if quote
                    else None
                ),
                reply_markup=markup,
            )
            return message.message_id

        first_chat = target.chat_id
        plain = False
        try:
            mid = await self._call(
                target, lambda c: send(c, plain=False), what="sendMessage", idempotent=False
            )
            return mid, False
        except BadRequest as exc:
            if not _is_parse_error(exc):
                raise
            log.info("telegram rejected HTML (%s); sending plain text", exc.message)
        except DeliveryUncertain as exc:
            exc.plain = plain
            raise
        plain = True
        try:
            mid = await self._call(
                target, lambda c: send(c, plain=True), what="sendMessage", idempotent=False
            )
        except DeliveryUncertain as exc:
            exc.plain = plain
            raise
        return mid, True

    async def _find_sent(
        self,
        target: Target,
        after: int,
        text: str,
        *,
        plain: bool,
        markup: InlineKeyboardMarkup | None = None,
    ) -> int | None:
        """The id of the message holding ``text`` sent after message ``after``,
        None when Telegram has no message there yet.

        Telegram numbers a chat's messages in order and has no call that reads
        one, so each id after ``after`` is edited to the very text that was
        sent: "not modified" is the lost message, "can't be edited" someone
        else's, "not found" the end of the chat. Ids this process sent are
        skipped, so no other message of ours is touched.
        """
        known = self._sent.get(target.chat_id, {})
        for message_id in range(after + 1, after + 1 + PROBE_LIMIT):
            if message_id in known:
                continue

            async def edit(chat_id: int, mid: int = message_id) -> None:
                await self.bot.edit_message_text(
                    chat_id=chat_id,
                    message_id=mid,
                    text=text if plain else to_html(text),
                    parse_mode=None if plain else ParseMode.HTML,
                    # The same keyboard too: "not modified" compares it as well.
                    reply_markup=markup,
                )

            try:
                await self._call(target, edit, what="editMessageText", idempotent=True)
            except BadRequest as exc:
                if _is_not_modified(exc):
                    return message_id
                if _is_not_editable(exc):
                    continue
                if _is_not_found(exc):
                    return None
                raise DeliveryUncertain(
                    f"sendMessage to chat {target.chat_id}: could not tell whether it "
                    f"arrived ({exc.message})"
                ) from exc
            except DeliveryError as exc:
                raise DeliveryUncertain(
                    f"sendMessage to chat {target.chat_id}: could not tell whether it "
                    f"arrived ({exc})"
                ) from exc
            else:
                # A message of ours this process did not send (another process
                # wrote into the chat); it now holds this text, so it stands
                # for the lost one.
                log.warning(
                    "telegram: message %s in chat %s was overwritten while looking for a lost send",
                    message_id,
                    target.chat_id,
                )
                return message_id
        raise DeliveryUncertain(
            f"sendMessage to chat {target.chat_id}: could not tell whether it arrived "
            f"(no answer among the {PROBE_LIMIT} messages after {after})"
        )

    async def edit_text(
        self,
        target: Target,
        message_id: int,
        text: str,
        *,
        plain: bool,
        markup: InlineKeyboardMarkup | None = None,
    ) -> bool:
        """Replace a message's text and its keyboard (an edit without ``markup``
        takes the keyboard away, as Telegram does); returns whether it ended up plain."""

        async def edit(chat_id: int, *, as_plain: bool) -> None:
            await self.bot.edit_message_text(
                chat_id=chat_id,
                message_id=message_id,
                text=text if as_plain else to_html(text),
                parse_mode=None if as_plain else ParseMode.HTML,
                reply_markup=markup,
            )

        try:
            await self._call(
                target, lambda c: edit(c, as_plain=plain), what="editMessageText", idempotent=True
            )
            return plain
        except BadRequest as exc:
            if _is_not_modified(exc):
                return plain
            if plain or not _is_parse_error(exc):
                raise
            log.info("telegram rejected HTML (%s); editing as plain text", exc.message)
        try:
            await self._call(
                target, lambda c: edit(c, as_plain=True), what="editMessageText", idempotent=True
            )
        except BadRequest as exc:
            if not _is_not_modified(exc):
                raise
        return True

    async def set_markup(
        self, target: Target, message_id: int, markup: InlineKeyboardMarkup | None
    ) -> None:
        """Put ``markup`` under a message, or take its keyboard away (None)."""

        async def edit(chat_id: int) -> None:
            await self.bot.edit_message_reply_markup(
                chat_id=chat_id, message_id=message_id, reply_markup=markup
            )

        try:
            await self._call(target, edit, what="editMessageReplyMarkup", idempotent=True)
        except BadRequest as exc:
            if not _is_not_modified(exc):
                raise

    async def answer_query(self, query_id: str) -> bool:
        """Answer a callback query so the client stops its spinner; False when
        Telegram refused (answered already, or too old)."""
        try:
            await self.bot.answer_callback_query(query_id)
        except BadRequest as exc:
            log.info("telegram: callback query %s not answered: %s", query_id, exc.message)
            return False
        return True

    async def is_forum(self, target: Target) -> bool:
        """Whether the chat is a supergroup with topics turned on (getChat)."""
        chat = await self._call(
            target,
            lambda c: self.bot.get_chat(chat_id=c),
            what="getChat",
            idempotent=True,
            paced=False,
        )
        return bool(chat.is_forum)

    async def create_topic(self, target: Target, name: str) -> int:
        """Open a forum topic; returns its ``message_thread_id``."""
        topic = await self._call(
            target,
            lambda c: self.bot.create_forum_topic(chat_id=c, name=name),
            what="createForumTopic",
            idempotent=False,
        )
        return topic.message_thread_id

    async def typing(self, target: Target) -> None:
        await self._call(
            target,
            lambda c: self.bot.send_chat_action(
                chat_id=c, action=ChatAction.TYPING, message_thread_id=target.thread_id
            ),
            what="sendChatAction",
            idempotent=True,
            paced=False,
        )


class _ChatSink:
    """``MessageSink`` for one reply in one chat; messages are Telegram message ids.

    The first message quotes ``reply_to``; once Telegram refused the HTML of
    one message, the rest of the reply is sent as plain text too.

    The reply's keyboard belongs under its final message only. Once the stream
    has ended (``final``) every write carries it, which in the usual case puts
    it on the last message with no call of its own; ``finish`` then mends what
    that could not know (a final text that needed no write, or a last write
    that opened one more message).
    """

    def __init__(
        self, *, sender: Sender, target: Target, reply_to: int | None, after: int | None
    ) -> None:
        self.sender = sender
        self.target = target
        self.reply_to = reply_to
        # The latest message of the chat this reply knows: the question, then
        # each message of the reply, so a lost send can be looked for after it.
        self.after = after
        self.plain = False
        self.posted = 0
        self.first_shown = asyncio.Event()
        self.markup: InlineKeyboardMarkup | None = None
        self.final = False
        # Messages of this reply that show the keyboard now.
        self.keyed: set[int] = set()

    def _markup(self) -> InlineKeyboardMarkup | None:
        return self.markup if self.final else None

    async def post(self, text: str) -> int:
        reply_to = self.reply_to if not self.posted else None
        markup = self._markup()
        mid, plain = await self.sender.send_text(
            self.target, text, reply_to=reply_to, after=self.after, markup=markup
        )
        self.after = mid
        self.posted += 1
        self.plain = self.plain or plain
        if markup is not None:
            self.keyed.add(mid)
        self.first_shown.set()
        return mid

    async def update(self, message: int, text: str) -> None:
        markup = self._markup()
        try:
            plain = await self.sender.edit_text(
                self.target, message, text, plain=self.plain, markup=markup
            )
        except BadRequest as exc:
            if "message to edit not found" not in exc.message.lower():
                raise
            # Someone deleted the half-shown answer; the renderer shows it again in full.
            log.info("message %s was deleted; resending", message)
            raise MessageLost(str(message)) from exc
        self.plain = self.plain or plain
        if markup is not None:
            self.keyed.add(message)
        else:
            self.keyed.discard(message)

    async def finish(self, messages: list[int]) -> None:
        """Leave the keyboard under the last message alone."""
        if self.markup is None or not messages:
            return
        last = messages[-1]
        for message in sorted(self.keyed - {last}):
            await self.sender.set_markup(self.target, message, None)
            self.keyed.discard(message)
        if last not in self.keyed:
            await self.sender.set_markup(self.target, last, self.markup)
            self.keyed.add(last)


class ReplyView:
    """Renders one reply into one chat. Use ``render`` as the manager's Render.

    Edits are paced ``edit_interval`` apart within the reply, its last one
    included (Telegram counts every call against the chat's flood limit).
    """

    def __init__(
        self,
        *,
        sender: Sender,
        target: Target,
        reply_to: int | None,
        edit_interval: float,
        after: int | None = None,
        typing_interval: float = 4.0,
        limit: int = MESSAGE_LIMIT,
        on_gone: Callable[[ConversationRef], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sender = sender
        self.target = target
        self.typing_interval = typing_interval
        self.limit = limit
        self._on_gone = on_gone
        self._sink = _ChatSink(
            sender=sender, target=target, reply_to=reply_to, after=after or reply_to
        )
        self._renderer: StreamRenderer[int] = StreamRenderer(
            sink=self._sink,
            pacer=EditPacer(edit_interval, clock=clock),
            keys=(target.ref.key,),
            split=lambda text: split_first(text, self.limit),
            pace_final=True,
        )
        self.message_ids: list[int] = self._renderer.messages

    async def render(self, reply: Reply) -> None:
        """Show ``reply`` as it streams; returns once the whole text is shown.

        A blocked bot (403) marks the conversation inactive and ends rendering
        quietly. A send whose outcome stays unknown raises: the answer is then
        recorded as failed, never as delivered. The stream is always read to
        its end so the manager stores the answer.
        """
        if not reply.should_render:
            await reply.collect()
            return
        done = asyncio.Event()
        sink = self._sink
        sink.markup = inline_keyboard(reply.buttons, where=self.target.ref.key)

        async def chunks() -> AsyncIterator[str]:
            try:
                async for chunk in reply:
                    yield chunk
            finally:
                done.set()
                sink.final = True

        typing = asyncio.create_task(self._keep_typing(done))
        try:
            await self._renderer.render(chunks())
            await sink.finish(self.message_ids)
        except ChatGone as exc:
            log.warning("%s; marking %s inactive", exc, self.target.ref.key)
            if self._on_gone is not None:
                await self._on_gone(self.target.ref)
        except DeliveryUncertain as exc:
            log.error("reply for %s may be incomplete: %s", self.target.ref.key, exc)
            raise
        finally:
            self._sink.first_shown.set()
            typing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await typing

    async def _keep_typing(self, done: asyncio.Event) -> None:
        await asyncio.sleep(0)  # an answer already complete needs no typing
        shown = self._sink.first_shown
        while not shown.is_set() and not done.is_set():
            try:
                await self.sender.typing(self.target)
            except (ChatGone, DeliveryError, BadRequest) as exc:
                log.debug("typing action for %s failed: %s", self.target.ref.key, exc)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shown.wait(), self.typing_interval)
