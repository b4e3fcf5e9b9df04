"""A local fake of the Telegram Bot API, speaking the real wire protocol.

Runs an aiohttp server on 127.0.0.1 that answers ``/bot<token>/<method>`` with
the real envelope (``{"ok": true, "result": ...}`` or ``{"ok": false,
"error_code": ..., "description": ..., "parameters": {...}}``), accepts
form-encoded, multipart and JSON bodies (python-telegram-bot sends form fields
whose complex values are JSON), and records every call.

Faults are injected per chat (429 with ``retry_after``, or Telegram's flood limits
enforced with ``enforce_flood_limits``; blocked bot, migrated
group, no right to open topics) or per method (hold a call until released,
for every chat or one, answer after the client gave up). Chats can be made
forum supergroups, whose topics the bot opens with ``createForumTopic`` and
sends into with ``message_thread_id``, as Telegram allows. Update builders
produce the JSON Telegram would send.

Inline keyboards (``reply_markup`` on sendMessage, editMessageText and
editMessageReplyMarkup) are validated as Telegram does (callback_data 1-64
bytes, at most 100 buttons, 8 to a row) and recorded on the message; an edit
of the text without ``reply_markup`` takes the keyboard away. ``press`` builds
the ``callback_query`` update of a person pressing a button, and
``answerCallbackQuery`` refuses a query answered already, unknown, or older
than 15 minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, web

from tests.support import serve_local

MESSAGE_LIMIT = 4096
CALLBACK_DATA_LIMIT = 64
KEYBOARD_LIMIT = 100
ROW_LIMIT = 8
# How long Telegram takes an answer to a callback query.
QUERY_LIFETIME = 15 * 60
QUERY_REFUSED = "Bad Request: query is too old and response timeout expired or query ID is invalid"
_JSON_FIELDS = {
    "reply_parameters",
    "entities",
    "allowed_updates",
    "commands",
    "link_preview_options",
    "reply_markup",
    "scope",
}
_INT_FIELDS = {
    "message_id",
    "offset",
    "limit",
    "timeout",
    "message_thread_id",
    "reply_to_message_id",
    "cache_time",
    "icon_color",
}
TOPIC_NAME_LIMIT = 128
# The colour Telegram gives a topic opened without one.
DEFAULT_TOPIC_COLOR = 7322096
_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler",
    "a", "code", "pre", "blockquote", "tg-emoji",
}  # fmt: skip
_ENTITY_NAMES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_TOKEN = re.compile(r"<(/?)([A-Za-z0-9-]*)([^<>]*)>|&(#\d+|#x[0-9A-Fa-f]+|[A-Za-z]+);|<")


NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)


class ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float  # time.monotonic() when the call arrived
    chat_id: int | str | None = None
    error: str = ""  # description when the call was answered with an error


@dataclass
class SentMessage:
    chat_id: int
    message_id: int
    text: str  # visible text, after HTML parsing
    parse_mode: str | None
    thread_id: int | None
    reply_to: int | None
    sent_at: float
    edits: list[str] = field(default_factory=list)
    # The inline keyboard under the message, as sent ({"inline_keyboard": rows}).
    reply_markup: dict[str, Any] | None = None

    def buttons(self) -> list[tuple[str, str]]:
        """(label, callback_data) of every button under the message, row by row."""
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        return [(b["text"], b.get("callback_data", "")) for row in rows for b in row]


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def parse_html(raw: str) -> str:
    """Visible text of Telegram HTML; raises ``ApiError`` where Telegram would."""
    out: list[str] = []
    stack: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(raw):
        out.append(raw[pos : match.start()])
        pos = match.end()
        offset = len(raw[: match.start()].encode())
        token = match.group(0)
        if match.group(4) is not None:
            name = match.group(4)
            if name.startswith("#x"):
                out.append(chr(int(name[2:], 16)))
            elif name.startswith("#"):
                out.append(chr(int(name[1:])))
            elif name in _ENTITY_NAMES:
                out.append(_ENTITY_NAMES[name])
            else:
                out.append(token)  # Telegram keeps unknown entities literally
            continue
        if token == "<" or not match.group(2):
            raise ApiError(
                400,
                "Bad Request: can't parse entities: Unexpected end of name token at byte "
                f"offset {offset}",
            )
        closing, tag = match.group(1) == "/", match.group(2).lower()
        if tag not in _TAGS:
            raise ApiError(
                400,
                f'Bad Request: can\'t parse entities: Unsupported start tag "{tag}" at byte '
                f"offset {offset}",
            )
        if closing:
            if not stack or stack[-1] != tag:
                raise ApiError(
                    400,
                    f"Bad Request: can't parse entities: Unmatched end tag at byte offset "
                    f'{offset}, expected "</{stack[-1] if stack else ""}>", found "</{tag}>"',
                )
            stack.pop()
        else:
            stack.append(tag)
    out.append(raw[pos:])
    if stack:
        raise ApiError(
            400,
            "Bad Request: can't parse entities: Can't find end tag corresponding to start "
            f'tag "{stack[-1]}"',
        )
    return "".join(out)


class FakeTelegram:
    """The fake server. ``await start()``, point the bot at ``api_url``."""

    def __init__(
        self,
        *,
        token: str = "123456:TEST-token",
        bot_id: int = 123456,
        username: str = "deskmate_bot",
    ) -> None:
        self.token = token
        self.bot_id = bot_id
        self.username = username
        self.calls: list[Call] = []
        self.messages: dict[int, list[SentMessage]] = defaultdict(list)
        self.commands: list[dict[str, Any]] = []
        self.commands_in: dict[str, list[dict[str, Any]]] = {}
        self.webhook: dict[str, Any] | None = None
        self.confirmed_offset = 0
        self.long_polls = 0  # getUpdates calls waiting right now
        self._poll_generation = 0
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1000)
        self._message_ids: dict[int, itertools.count[int]] = defaultdict(lambda: itertools.count(1))
        self._chat_types: dict[int, str] = {}
        self._changed = asyncio.Condition()
        self._rate_limits: dict[int, list[int]] = defaultdict(list)
        self._flood: tuple[float, float, float, float] | None = None
        self._last_write: dict[int, float] = {}
        self._writes: list[float] = []
        self._blocked: set[int] = set()
        self._migrated: dict[int, int] = {}
        self._holds: dict[tuple[str, int | None], asyncio.Event] = {}
        self._held: dict[tuple[str, int | None], int] = defaultdict(int)
        self._forums: set[int] = set()
        self._no_topic_rights: set[int] = set()
        # chat -> message_thread_id -> the topic's service message.
        self.topics: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
        self._stalls: dict[str, list[tuple[float, bool]]] = defaultdict(list)
        # Message ids of people's messages, per chat: the bot cannot edit them.
        self._user_messages: dict[int, set[int]] = defaultdict(set)
        self._reject_entities: dict[int, int] = defaultdict(int)
        # Callback query id -> when it was made, and whether it was answered.
        self.queries: dict[str, dict[str, Any]] = {}
        self._query_ids = itertools.count(4_000_000_000_000_000_001)
        self._runner: web.AppRunner | None = None
        self._closing = False
        self.port = 0

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner, self.port = await serve_local(app)

    async def close(self) -> None:
        self._closing = True
        self._notify()
        for event in self._holds.values():
            event.set()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        """What ``TELEGRAM_API_URL`` should be set to."""
        return f"http://127.0.0.1:{self.port}"

    # -- fault injection -----------------------------------------------------

    def rate_limit(self, chat_id: int, retry_after: int, *, times: int = 1) -> None:
        """Answer the next ``times`` sends/edits to ``chat_id`` with 429."""
        self._rate_limits[chat_id].extend([retry_after] * times)

    def enforce_flood_limits(
        self,
        *,
        per_chat: float = 1.0,
        group: float = 3.0,
        global_rate: float = 30.0,
        slack: float = 0.03,
    ) -> None:
        """Answer 429 with ``retry_after``, as Telegram does, to a send, edit or
        new topic that comes less than ``per_chat`` (``group`` in groups)
        seconds after the last one in its chat, or that would make more than
        ``global_rate`` in one second. ``slack`` absorbs the jitter of the wire."""
        self._flood = (per_chat, group, global_rate, slack)

    def block(self, chat_id: int) -> None:
        """The user blocked the bot: every call for the chat answers 403."""
        self._blocked.add(chat_id)

    def migrate(self, chat_id: int, new_chat_id: int) -> None:
        """The group became a supergroup: calls to the old id answer 400 + migrate_to_chat_id."""
        self._migrated[chat_id] = new_chat_id
        self._chat_types[new_chat_id] = "supergroup"

    def reject_entities(self, chat_id: int, *, times: int = 1) -> None:
        """Answer the next ``times`` HTML sends/edits to the chat with an entity parse error."""
        self._reject_entities[chat_id] += times

    def delete_messages(self, chat_id: int) -> None:
        """The user deleted every bot message in the chat."""
        self.messages[chat_id].clear()

    def hold(self, method: str, chat_id: int | None = None) -> None:
        """Calls of ``method`` (for ``chat_id`` only, when given) wait,
        unprocessed, until ``release``. A call whose client went away meanwhile
        is then dropped, never carried out."""
        self._holds[(method, chat_id)] = asyncio.Event()

    def release(self, method: str, chat_id: int | None = None) -> None:
        event = self._holds.pop((method, chat_id), None)
        if event is not None:
            event.set()

    def held(self, method: str, chat_id: int | None = None) -> int:
        return self._held[(method, chat_id)]

    def make_forum(self, chat_id: int) -> None:
        """The chat is a supergroup with topics turned on."""
        self._chat_types[chat_id] = "supergroup"
        self._forums.add(chat_id)

    def deny_topics(self, chat_id: int) -> None:
        """The bot is not an admin with the "manage topics" right in the chat."""
        self._no_topic_rights.add(chat_id)

    def open_topic(self, chat_id: int, name: str, *, by: dict[str, Any]) -> int:
        """A topic opened in a forum (by a person, or by the bot); returns its id."""
        self.make_forum(chat_id)
        thread_id = next(self._message_ids[chat_id])
        self.topics[chat_id][thread_id] = {
            "message_id": thread_id,
            "date": int(time.time()),
            "chat": self._chat(chat_id),
            "from": by,
            "message_thread_id": thread_id,
            "is_topic_message": True,
            "forum_topic_created": {"name": name, "icon_color": DEFAULT_TOPIC_COLOR},
        }
        return thread_id

    def revoke_token(self) -> None:
        """The owner revoked the token in @BotFather: every call answers 401."""
        self.token = f"{self.bot_id}:revoked"

    def reset_update_ids(self, start: int) -> None:
        """Telegram chose a new ``update_id`` sequence (after a week without
        updates the next id is random, possibly lower than the last)."""
        self._update_ids = itertools.count(start)

    def stall(self, method: str, seconds: float, *, times: int = 1, apply: bool = True) -> None:
        """Answer the next calls of ``method`` only after ``seconds``, so the
        client times out: with ``apply`` the call took effect all the same,
        without it Telegram never carried it out."""
        self._stalls[method].extend([(seconds, apply)] * times)

    # -- updates -------------------------------------------------------------

    def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates; assigns ``update_id`` if missing."""
        if "update_id" not in update:
            update["update_id"] = next(self._update_ids)
        self._updates.append(update)
        self._notify()
        return update

    def repush(self, update: dict[str, Any]) -> None:
        """Deliver the same update again (Telegram redelivers after a lost ack)."""
        self._updates.append(dict(update))
        self._updates.sort(key=lambda u: u["update_id"])
        self._notify()

    def _notify(self) -> None:
        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()

        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(wake())

    def message_update(
        self,
        chat_id: int,
        text: str | None,
        *,
        user_id: int | None = None,
        first_name: str = "Alice",
        chat_type: str | None = None,
        thread_id: int | None = None,
        reply_to: dict[str, Any] | None = None,
        entities: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Build (without queuing) the update for a person's message.

        A message in a topic replies to the topic's first message unless it
        replies to another one, as in Telegram; writing in a topic the fake
        has not seen opens it (and makes the chat a forum).
        """
        user_id = user_id if user_id is not None else abs(chat_id) % 10**9 or 42
        if thread_id is not None:
            root = self.topics[chat_id].get(thread_id)
            if root is None:
                self.make_forum(chat_id)
                root = self.topics[chat_id][thread_id] = {
                    "message_id": thread_id,
                    "date": int(time.time()),
                    "chat": self._chat(chat_id),
                    "from": {"id": user_id, "is_bot": False, "first_name": first_name},
                    "message_thread_id": thread_id,
                    "is_topic_message": True,
                    "forum_topic_created": {"name": "Topic", "icon_color": DEFAULT_TOPIC_COLOR},
                }
            reply_to = reply_to or root
        message_id = next(self._message_ids[chat_id])
        self._user_messages[chat_id].add(message_id)
        return build_message_update(
            update_id=next(self._update_ids),
            message_id=message_id,
            chat_id=chat_id,
            text=text,
            user_id=user_id,
            first_name=first_name,
            chat_type=chat_type or self._chat_type(chat_id),
            thread_id=thread_id,
            reply_to=reply_to,
            entities=entities,
            bot_username=self.username,
            extra=extra,
            forum=chat_id in self._forums,
        )

    def topic_created_update(self, chat_id: int, thread_id: int) -> dict[str, Any]:
        """Build the "topic created" service message Telegram sends when a
        person opens a topic (see ``open_topic``)."""
        root = self.topics[chat_id][thread_id]
        return {"update_id": next(self._update_ids), "message": dict(root)}

    def press(
        self,
        message: SentMessage,
        label: str,
        *,
        user_id: int | None = None,
        first_name: str = "Alice",
    ) -> dict[str, Any]:
        """Build (without queuing) the ``callback_query`` update Telegram sends
        when a person presses the button labelled ``label`` under ``message``
        (which must show it). By default the presser is the private chat's person."""
        data = next((d for text, d in message.buttons() if text == label), None)
        if data is None:
            raise AssertionError(f"no button {label!r} under message {message.message_id}")
        chat_id = message.chat_id
        user_id = user_id if user_id is not None else abs(chat_id) % 10**9 or 42
        query_id = str(next(self._query_ids))
        self.queries[query_id] = {"at": time.monotonic(), "answered": 0, "data": data}
        return {
            "update_id": next(self._update_ids),
            "callback_query": {
                "id": query_id,
                "from": {"id": user_id, "is_bot": False, "first_name": first_name},
                "message": {**self._message_json(message), "reply_markup": message.reply_markup},
                "chat_instance": str(abs(chat_id) * 7919 % 10**12),
                "data": data,
            },
        }

    def age_queries(self, seconds: float) -> None:
        """Every callback query so far was made ``seconds`` earlier."""
        for query in self.queries.values():
            query["at"] -= seconds

    def send_user_message(self, chat_id: int, text: str | None, **kwargs: Any) -> dict[str, Any]:
        return self.push(self.message_update(chat_id, text, **kwargs))

    def bot_user(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "Deskmate",
            "username": self.username,
        }

    # -- assertions ----------------------------------------------------------

    @property
    def queued(self) -> list[dict[str, Any]]:
        """Updates not yet confirmed by a getUpdates offset."""
        return list(self._updates)

    def calls_to(self, method: str, chat_id: int | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method == method and (chat_id is None or c.chat_id == chat_id)
        ]

    def texts(self, chat_id: int, thread_id: int | None = None) -> list[str]:
        """Current visible text of every bot message in the chat (in one of its
        topics, when given), in order."""
        return [
            m.text for m in self.messages[chat_id] if thread_id is None or m.thread_id == thread_id
        ]

    def message_json(self, message: SentMessage) -> dict[str, Any]:
        """A bot message as a person's reply to it carries it (``reply_to``)."""
        return self._message_json(message)

    async def wait_for(
        self, predicate: Callable[[], bool], *, within: float = 10.0, what: str = ""
    ) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or predicate}")
            await asyncio.sleep(0.02)

    async def deliver_webhook(
        self, update: dict[str, Any], *, secret: str | None
    ) -> tuple[int, str]:
        """POST an update to the registered webhook the way Telegram does."""
        assert self.webhook is not None, "no webhook registered"
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        async with (
            ClientSession() as session,
            session.post(self.webhook["url"], data=json.dumps(update), headers=headers) as resp,
        ):
            return resp.status, await resp.text()

    # -- the wire protocol ---------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        method = request.match_info["method"]
        try:
            params = await _params(request)
        except (ValueError, TypeError) as exc:
            self.calls.append(Call(method, {}, time.monotonic(), error=str(exc)))
            return _error(400, f"Bad Request: {exc}")
        chat_id = params.get("chat_id")
        call = Call(method, params, time.monotonic(), chat_id)
        self.calls.append(call)
        key: tuple[str, int | None] = (method, chat_id if isinstance(chat_id, int) else None)
        if key not in self._holds:
            key = (method, None)
        hold = self._holds.get(key)
        if hold is not None:
            self._held[key] += 1
            try:
                await hold.wait()
            finally:
                self._held[key] -= 1
            # A client killed while its call was held never learns the result,
            # and Telegram would not have acted on a call it never finished reading.
            if request.transport is None or request.transport.is_closing():
                call.error = "client went away while held"
                return _error(499, "client went away")
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            call.error = "Not Found"
            return _error(404, "Not Found")
        stalls = self._stalls.get(method)
        stall, apply = stalls.pop(0) if stalls else (0.0, True)
        if not apply:
            await asyncio.sleep(stall)
            call.error = "stalled, never carried out"
            return _error(502, "Bad Gateway")
        try:
            result = await handler(params, request)
        except ApiError as exc:
            call.error = exc.description
            return _error(exc.code, exc.description, exc.parameters)
        if stall:
            await asyncio.sleep(stall)
        return web.json_response({"ok": True, "result": result})

    def _chat_type(self, chat_id: int) -> str:
        if chat_id in self._chat_types:
            return self._chat_types[chat_id]
        if chat_id > 0:
            return "private"
        return "supergroup" if str(chat_id).startswith("-100") else "group"

    def _chat(self, chat_id: int) -> dict[str, Any]:
        kind = self._chat_type(chat_id)
        chat: dict[str, Any] = {"id": chat_id, "type": kind}
        if kind == "private":
            chat["first_name"] = "Alice"
        else:
            chat["title"] = f"Group {chat_id}"
        if chat_id in self._forums:
            chat["is_forum"] = True
        return chat

    def _check_chat(self, chat_id: int) -> None:
        if chat_id in self._migrated:
            raise ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": self._migrated[chat_id]},
            )
        if chat_id in self._blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")

    def _check_flood(self, chat_id: int) -> None:
        pending = self._rate_limits.get(chat_id)
        if pending:
            _too_many(pending.pop(0))
        if self._flood is None:
            return
        per_chat, group, global_rate, slack = self._flood
        now = time.monotonic()
        interval = group if self._chat_type(chat_id) != "private" else per_chat
        since = now - self._last_write.get(chat_id, float("-inf"))
        if since < interval - slack:
            _too_many(math.ceil(interval - since))
        self._writes = [t for t in self._writes if t > now - 1.0 + slack]
        if len(self._writes) >= global_rate:
            _too_many(1)
        self._last_write[chat_id] = now
        self._writes.append(now)

    def _find(self, chat_id: int, message_id: int) -> SentMessage:
        for message in self.messages[chat_id]:
            if message.message_id == message_id:
                return message
        if message_id in self._user_messages[chat_id]:
            raise ApiError(400, "Bad Request: message can't be edited")
        raise ApiError(400, "Bad Request: message to edit not found")

    def _visible(self, chat_id: int, text: str, parse_mode: str | None) -> str:
        html_mode = (parse_mode or "").upper() == "HTML"
        if html_mode and self._reject_entities[chat_id] > 0:
            self._reject_entities[chat_id] -= 1
            raise ApiError(
                400,
                "Bad Request: can't parse entities: Can't find end of the entity starting at "
                "byte offset 0",
            )
        visible = parse_html(text) if html_mode else text
        if not visible.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if utf16_len(visible) > MESSAGE_LIMIT:
            raise ApiError(400, "Bad Request: message is too long")
        return visible

    def _message_json(self, message: SentMessage) -> dict[str, Any]:
        data: dict[str, Any] = {
            "message_id": message.message_id,
            "date": int(time.time()),
            "chat": self._chat(message.chat_id),
            "from": self.bot_user(),
            "text": message.text,
        }
        if message.thread_id:
            data["message_thread_id"] = message.thread_id
            data["is_topic_message"] = True
        if message.edits:
            data["edit_date"] = int(time.time())
        if message.reply_markup:
            data["reply_markup"] = message.reply_markup
        return data

    def _markup(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """The inline keyboard a call asks for, checked as Telegram checks it."""
        markup = params.get("reply_markup")
        if markup is None:
            return None
        rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise ApiError(400, "Bad Request: can't parse inline keyboard button: object expected")
        buttons = [b for row in rows for b in row]
        if len(buttons) > KEYBOARD_LIMIT or any(len(row) > ROW_LIMIT for row in rows):
            raise ApiError(400, "Bad Request: reply markup is too long")
        for button in buttons:
            if not isinstance(button, dict) or not str(button.get("text") or "").strip():
                raise ApiError(400, "Bad Request: BUTTON_TEXT_INVALID")
            data = button.get("callback_data")
            if "url" not in button and data is None:
                raise ApiError(400, "Bad Request: BUTTON_TYPE_INVALID")
            if data is not None and not 1 <= len(str(data).encode()) <= CALLBACK_DATA_LIMIT:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        return markup if buttons else None

    # Methods. Each takes the decoded parameters and returns the result.

    async def _m_getMe(self, params: dict[str, Any], request: web.Request) -> Any:
        return {
            **self.bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _m_getUpdates(self, params: dict[str, Any], request: web.Request) -> Any:
        if self.webhook is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use "
                "deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        # A newer getUpdates ends the one still waiting, as Telegram does when
        # two processes poll with one token.
        self._poll_generation += 1
        self.long_polls += 1
        try:
            return await self._long_poll(params, request, offset, self._poll_generation)
        finally:
            self.long_polls -= 1

    async def _long_poll(
        self, params: dict[str, Any], request: web.Request, offset: int, generation: int
    ) -> list[dict[str, Any]]:
        if offset:
            self.confirmed_offset = max(self.confirmed_offset, offset)
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        limit = int(params.get("limit") or 100)
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        while True:
            ready = [u for u in self._updates if u["update_id"] >= offset][:limit]
            remaining = deadline - time.monotonic()
            gone = request.transport is None or request.transport.is_closing()
            if ready or remaining <= 0 or gone or self._closing:
                return ready
            if request.match_info["token"] != self.token:
                raise ApiError(401, "Unauthorized")  # revoked while the poll waited
            if generation != self._poll_generation:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only "
                    "one bot instance is running",
                )
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(remaining, 0.1))

    def _check_thread(self, chat_id: int, thread_id: Any) -> int | None:
        if thread_id in (None, ""):
            return None
        if not isinstance(thread_id, int) or thread_id not in self.topics[chat_id]:
            raise ApiError(400, "Bad Request: message thread not found")
        return thread_id

    async def _m_sendMessage(self, params: dict[str, Any], request: web.Request) -> Any:
        chat_id = _int(params, "chat_id")
        self._check_chat(chat_id)
        self._check_flood(chat_id)
        thread_id = self._check_thread(chat_id, params.get("message_thread_id"))
        parse_mode = params.get("parse_mode")
        visible = self._visible(chat_id, str(params.get("text", "")), parse_mode)
        markup = self._markup(params)
        reply = params.get("reply_parameters") or {}
        message = SentMessage(
            chat_id=chat_id,
            message_id=next(self._message_ids[chat_id]),
            text=visible,
            parse_mode=parse_mode,
            thread_id=thread_id,
            reply_to=reply.get("message_id") or params.get("reply_to_message_id"),
            sent_at=time.monotonic(),
            reply_markup=markup,
        )
        self.messages[chat_id].append(message)
        return self._message_json(message)

    async def _m_editMessageText(self, params: dict[str, Any], request: web.Request) -> Any:
        chat_id = _int(params, "chat_id")
        self._check_chat(chat_id)
        self._check_flood(chat_id)
        message = self._find(chat_id, int(params["message_id"]))
        parse_mode = params.get("parse_mode")
        visible = self._visible(chat_id, str(params.get("text", "")), parse_mode)
        markup = self._markup(params)
        if (
            visible.strip() == message.text.strip()
            and parse_mode == message.parse_mode
            and markup == message.reply_markup
        ):
            raise ApiError(400, NOT_MODIFIED)
        message.edits.append(message.text)
        message.text = visible
        message.parse_mode = parse_mode
        message.reply_markup = markup
        return self._message_json(message)

    async def _m_editMessageReplyMarkup(self, params: dict[str, Any], request: web.Request) -> Any:
        chat_id = _int(params, "chat_id")
        self._check_chat(chat_id)
        self._check_flood(chat_id)
        message = self._find(chat_id, int(params["message_id"]))
        markup = self._markup(params)
        if markup == message.reply_markup:
            raise ApiError(400, NOT_MODIFIED)
        message.reply_markup = markup
        return self._message_json(message)

    async def _m_answerCallbackQuery(self, params: dict[str, Any], request: web.Request) -> Any:
        query = self.queries.get(str(params.get("callback_query_id") or ""))
        if query is None or query["answered"] or time.monotonic() - query["at"] > QUERY_LIFETIME:
            raise ApiError(400, QUERY_REFUSED)
        text = params.get("text")
        if text is not None and len(str(text)) > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        query["answered"] += 1
        return True

    async def _m_getChat(self, params: dict[str, Any], request: web.Request) -> Any:
        chat_id = _int(params, "chat_id")
        self._check_chat(chat_id)
        return {
            **self._chat(chat_id),
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": True,
                "limited_gifts": True,
                "unique_gifts": True,
                "premium_subscription": True,
                "gifts_from_channels": True,
            },
        }

    async def _m_createForumTopic(self, params: dict[str, Any], request: web.Request) -> Any:
        chat_id = _int(params, "chat_id")
        self._check_chat(chat_id)
        self._check_flood(chat_id)
        if self._chat_type(chat_id) != "supergroup" or chat_id not in self._forums:
            raise ApiError(400, "Bad Request: the chat is not a forum")
        if chat_id in self._no_topic_rights:
            raise ApiError(400, "Bad Request: not enough rights to create a topic")
        name = str(params.get("name") or "")
        if not 1 <= len(name) <= TOPIC_NAME_LIMIT:
            raise ApiError(
                400,
                "Bad Request: TOPIC_TITLE_EMPTY"
                if not name
                else "Bad Request: TOPIC_TITLE_INVALID",
            )
        thread_id = self.open_topic(chat_id, name, by=self.bot_user())
        return {"message_thread_id": thread_id, "name": name, "icon_color": DEFAULT_TOPIC_COLOR}

    async def _m_sendChatAction(self, params: dict[str, Any], request: web.Request) -> Any:
        chat_id = _int(params, "chat_id")
        self._check_chat(chat_id)
        if params.get("action") not in {"typing", "upload_document", "record_voice"}:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        return True

    async def _m_setMyCommands(self, params: dict[str, Any], request: web.Request) -> Any:
        commands = params.get("commands") or []
        for command in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", command.get("command", "")):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(command.get("description", "")) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        code = params.get("language_code") or ""
        if code and not re.fullmatch(r"[a-z]{2}", code):
            raise ApiError(400, "Bad Request: invalid language code specified")
        # Users whose app is set to ``code`` see its own list (the default without one).
        self.commands_in[code] = commands
        if not code:
            self.commands = commands
        return True

    async def _m_setWebhook(self, params: dict[str, Any], request: web.Request) -> Any:
        url = params.get("url") or ""
        if not url:
            self.webhook = None
            return True
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        self.webhook = {"url": url, "secret_token": secret, **params}
        return True

    async def _m_deleteWebhook(self, params: dict[str, Any], request: web.Request) -> Any:
        self.webhook = None
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self._updates.clear()
        return True

    async def _m_getWebhookInfo(self, params: dict[str, Any], request: web.Request) -> Any:
        return {
            "url": (self.webhook or {}).get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }


async def _params(request: web.Request) -> dict[str, Any]:
    raw: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            raw.update(await request.json())
        else:
            form = await request.post()
            raw.update({k: v for k, v in form.items() if isinstance(v, str)})
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _JSON_FIELDS and isinstance(value, str):
            value = json.loads(value)
        elif isinstance(value, str) and (
            key in _INT_FIELDS or (key == "chat_id" and re.fullmatch(r"-?\d+", value))
        ):
            value = int(value)
        params[key] = value
    return params


def _too_many(retry_after: int) -> None:
    raise ApiError(
        429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
    )


def _int(params: dict[str, Any], key: str) -> int:
    try:
        return int(params[key])
    except (KeyError, TypeError, ValueError):
        raise ApiError(400, f"Bad Request: {key} is required") from None


def _error(code: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=code)


def build_message_update(
    *,
    update_id: int,
    message_id: int,
    chat_id: int,
    text: str | None,
    user_id: int = 42,
    first_name: str = "Alice",
    chat_type: str = "private",
    thread_id: int | None = None,
    reply_to: dict[str, Any] | None = None,
    entities: list[dict[str, Any]] | None = None,
    bot_username: str = "deskmate_bot",
    extra: dict[str, Any] | None = None,
    forum: bool | None = None,
) -> dict[str, Any]:
    """The JSON of a ``message`` update, with command and mention entities found
    in ``text`` the way Telegram marks them (offsets in UTF-16 units).

    ``forum``: whether the chat has topics (by default: when ``thread_id`` is set).
    """
    chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
    if chat_type == "private":
        chat["first_name"] = first_name
    else:
        chat["title"] = "Support group"
        if forum or (forum is None and thread_id is not None):
            chat["is_forum"] = True
    message: dict[str, Any] = {
        "message_id": message_id,
        "date": int(time.time()),
        "chat": chat,
        "from": {"id": user_id, "is_bot": False, "first_name": first_name},
    }
    if text is not None:
        message["text"] = text
        found = entities if entities is not None else _entities(text)
        if found:
            message["entities"] = found
    if thread_id is not None:
        message["message_thread_id"] = thread_id
        message["is_topic_message"] = True
    if reply_to is not None:
        message["reply_to_message"] = reply_to
    if extra:
        message.update(extra)
    return {"update_id": update_id, "message": message}


def _entities(text: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for match in re.finditer(r"(?<!\S)/[A-Za-z0-9_]+(?:@[A-Za-z0-9_]+)?|@[A-Za-z0-9_]{5,}", text):
        kind = "bot_command" if match.group(0).startswith("/") else "mention"
        if kind == "bot_command" and match.start() != 0:
            continue
        found.append(
            {
                "type": kind,
                "offset": utf16_len(text[: match.start()]),
                "length": utf16_len(match.group(0)),
            }
        )
    return found
