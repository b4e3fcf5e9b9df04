"""Pure conversion from Telegram updates to platform-neutral events.

Nothing here does I/O. ``classify_update`` accepts a PTB ``Update`` or the
plain JSON dict Telegram sends (webhook body, ``getUpdates`` item), so tests
and the webhook path share one code path with polling.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from telegram import CallbackQuery, Message, MessageEntity, Update

from bot.types import ConversationRef, Inbound

PLATFORM = "telegram"

# Update kinds the adapter asks Telegram for; everything else is never sent.
ALLOWED_UPDATES: tuple[str, ...] = ("message", "callback_query", "my_chat_member")

# Telegram's limits on an inline keyboard: callback_data is 1-64 bytes, a
# message takes at most 100 buttons.
CALLBACK_DATA_LIMIT = 64
KEYBOARD_LIMIT = 100
# Labels up to this long sit two to a row (👍 👎); longer ones get a row each,
# so an option such as a whole question stays readable on a phone.
SHORT_LABEL = 16

GROUP_TYPES = frozenset({"group", "supergroup"})

# What a message carries besides text, named for the person told it was not
# passed on; checked in this order (a GIF also comes with a ``document``).
ATTACHMENTS: tuple[tuple[str, str], ...] = (
    ("animation", "a GIF"),
    ("photo", "a photo"),
    ("live_photo", "a photo"),
    ("video", "a video"),
    ("video_note", "a video message"),
    ("voice", "a voice message"),
    ("audio", "an audio file"),
    ("document", "a file"),
    ("sticker", "a sticker"),
    ("location", "a location"),
    ("venue", "a location"),
    ("contact", "a contact"),
    ("poll", "a poll"),
    ("dice", "a dice roll"),
    ("story", "a story"),
    ("paid_media", "paid media"),
)

# Whether every message in a chat is for the bot (a support space).
ListensTo = Callable[[ConversationRef], bool]


@dataclass(frozen=True, slots=True)
class BotIdentity:
    """Who the bot is (from getMe): the tenant id and the name people mention."""

    id: int
    username: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """An update the bot does not answer, with the reason for the log."""

    update_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ChatMoved:
    """A group became a supergroup: its conversation continues under ``new``."""

    update_id: int
    old: ConversationRef
    new: ConversationRef


@dataclass(frozen=True, slots=True)
class MembershipChanged:
    """The bot was blocked / removed (``active=False``) or let back in."""

    update_id: int
    ref: ConversationRef
    active: bool


@dataclass(frozen=True, slots=True)
class Pressed:
    """A person pressed a button: ``inbound`` is the command it stands for,
    ``query`` the callback query to answer, ``message`` the message the button
    is on (0 when Telegram no longer shows it)."""

    inbound: Inbound
    query: str
    message: int


Classified = Inbound | Pressed | Ignored | ChatMoved | MembershipChanged


def keyboard(
    buttons: Sequence[tuple[str, str]],
) -> tuple[list[list[tuple[str, str]]], list[tuple[str, str]]]:
    """Rows of (label, callback_data) for an inline keyboard, and the buttons
    left out because Telegram would refuse them (data over 64 bytes, an empty
    label or command, more than 100 buttons)."""
    kept: list[tuple[str, str]] = []
    refused: list[tuple[str, str]] = []
    for label, command in buttons:
        size = len(command.encode())
        if not label.strip() or not 1 <= size <= CALLBACK_DATA_LIMIT or len(kept) == KEYBOARD_LIMIT:
            refused.append((label, command))
        else:
            kept.append((label, command))
    if all(len(label) <= SHORT_LABEL for label, _ in kept):
        rows = [kept[i : i + 2] for i in range(0, len(kept), 2)]
    else:
        rows = [[button] for button in kept]
    return rows, refused


def event_id(update_id: int, chat_id: int, message_id: int) -> str:
    """The inbox key of a message update.

    Telegram picks a new, possibly lower ``update_id`` sequence after a week
    without updates, so the id alone would make a new message look like a
    redelivery of an old one; a redelivery repeats all three parts.
    """
    return f"{update_id}:{chat_id}:{message_id}"


def chat_ref(
    me: BotIdentity, chat_id: int | str, thread_id: int | str | None = None
) -> ConversationRef:
    return ConversationRef(
        platform=PLATFORM,
        tenant=str(me.id),
        chat=str(chat_id),
        thread=str(thread_id) if thread_id else "",
    )


def as_update(data: Update | Mapping[str, Any]) -> Update:
    """A PTB ``Update`` from either an ``Update`` or its JSON dict."""
    if isinstance(data, Update):
        return data
    return Update.de_json(dict(data), None)


def update_to_inbound(
    data: Update | Mapping[str, Any], *, me: BotIdentity, listens_to: ListensTo | None = None
) -> Inbound | None:
    """The ``Inbound`` this update asks the bot to answer, or None."""
    result = classify_update(data, me=me, listens_to=listens_to)
    return result if isinstance(result, Inbound) else None


def classify_update(
    data: Update | Mapping[str, Any], *, me: BotIdentity, listens_to: ListensTo | None = None
) -> Classified:
    """Decide what one update means for the bot.

    Private chats: every message from a person is answered (a message without
    text too: the manager tells the person it reads text only). Groups: only
    messages addressed to the bot - a command, an ``@username`` mention, a
    text mention of the bot, or a reply to one of the bot's messages - except
    in a chat ``listens_to`` names (a support space), where every message
    from a person counts, service messages (topic created, member joined, ...)
    aside. In forum supergroups each topic is its own conversation.

    ``meta["reply_to"]`` is the id of the message a group message replies to
    (a string); ``meta["attachment"]`` names what a message carries besides
    text ("a photo", "a file", ...), which is not passed on.
    """
    update = as_update(data)
    uid = update.update_id
    if update.callback_query is not None:
        return _pressed(uid, update.callback_query, me)
    if update.my_chat_member is not None:
        member = update.my_chat_member
        status = member.new_chat_member.status
        ref = chat_ref(me, member.chat.id)
        if status in ("kicked", "left"):
            return MembershipChanged(uid, ref, active=False)
        if status in ("member", "administrator", "creator", "restricted"):
            return MembershipChanged(uid, ref, active=True)
        return Ignored(uid, f"chat member status {status}")
    message = update.message
    if message is None:
        return Ignored(uid, "not a new message")
    if message.migrate_to_chat_id:
        new = chat_ref(me, message.migrate_to_chat_id)
        return ChatMoved(uid, chat_ref(me, message.chat.id), new)
    sender = message.from_user
    if sender is None:
        return Ignored(uid, "message without a sender")
    if sender.is_bot:
        return Ignored(uid, "message from a bot")
    chat = message.chat
    text, entities = _text_and_entities(message)
    in_group = chat.type in GROUP_TYPES
    if chat.type not in GROUP_TYPES and chat.type != "private":
        return Ignored(uid, f"{chat.type} chats are not served")
    command = _command(text, entities)
    if command is not None and command[1] and command[1].lower() != me.username.lower():
        return Ignored(uid, f"command for another bot @{command[1]}")
    thread_id = message.message_thread_id if message.is_topic_message else None
    ref = chat_ref(me, chat.id, thread_id)
    attachment = _attachment(message)
    if in_group and listens_to is not None and listens_to(ref):
        if not text and not attachment:
            return Ignored(uid, "service message in a support space")
    elif in_group and command is None and not _addressed(message, entities, me):
        return Ignored(uid, "group message not addressed to the bot")
    if command is not None:
        text = _strip_command_suffix(text)
    elif in_group:
        text = _strip_leading_mention(text, me)
    meta: dict[str, Any] = {
        "message_id": message.message_id,
        "chat_type": chat.type,
        "thread_id": thread_id,
        **({"group": True} if in_group else {}),
    }
    reply_to = _replied_to(message)
    if in_group and reply_to is not None:
        meta["reply_to"] = str(reply_to)
    if attachment:
        meta["attachment"] = attachment
    return Inbound(
        ref=ref,
        user=str(sender.id),
        text=text,
        event_id=event_id(uid, chat.id, message.message_id),
        user_name=sender.full_name or (sender.username or ""),
        meta=meta,
    )


def _pressed(uid: int, query: CallbackQuery, me: BotIdentity) -> Pressed | Ignored:
    """A button press as the command its button carries, sent by the presser
    in the chat (and forum topic) of the message the button is on.

    The event id is the query's id, unique to one press: a redelivered update
    repeats it, a second press gets a new one.
    """
    shown = query.message
    if shown is None:
        return Ignored(uid, "button press without its message (inline mode)")
    if query.from_user is None or query.from_user.is_bot:
        return Ignored(uid, "button press from a bot")
    command = (query.data or "").strip()
    if not command:
        return Ignored(uid, "button press without data")
    chat = shown.chat
    if chat.type not in GROUP_TYPES and chat.type != "private":
        return Ignored(uid, f"{chat.type} chats are not served")
    # An old message comes as InaccessibleMessage, which tells no topic.
    topic = isinstance(shown, Message) and shown.is_topic_message
    thread_id = shown.message_thread_id if topic and isinstance(shown, Message) else None
    sender = query.from_user
    inbound = Inbound(
        ref=chat_ref(me, chat.id, thread_id),
        user=str(sender.id),
        text=command,
        event_id=f"press:{query.id}",
        user_name=sender.full_name or (sender.username or ""),
        # No ``message_id``: the answer quotes nothing, and nothing tells which
        # message of the chat is the latest (lost sends are looked for after it).
        meta={
            "chat_type": chat.type,
            "thread_id": thread_id,
            "pressed": shown.message_id,
            **({"group": True} if chat.type in GROUP_TYPES else {}),
        },
    )
    return Pressed(inbound, query.id, shown.message_id)


def _attachment(message: Message) -> str:
    """What a message carries besides text, for a person; "" when nothing."""
    for name, described in ATTACHMENTS:
        if getattr(message, name, None):
            return described
    return ""


def _replied_to(message: Message) -> int | None:
    """The message this one answers; None when it answers none.

    Inside a forum topic every message "replies" to the topic's first message
    unless the person picked another one: that is no reply.
    """
    replied = message.reply_to_message
    if replied is None:
        return None
    if message.is_topic_message and replied.message_id == message.message_thread_id:
        return None
    return replied.message_id


def _text_and_entities(message: Message) -> tuple[str, dict[MessageEntity, str]]:
    if message.text is not None:
        return message.text, message.parse_entities()
    if message.caption is not None:
        return message.caption, message.parse_caption_entities()
    return "", {}


def _command(text: str, entities: Mapping[MessageEntity, str]) -> tuple[str, str] | None:
    """``(name, addressee)`` of a leading bot command, addressee "" when none."""
    for entity, value in entities.items():
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            name, _, addressee = value[1:].partition("@")
            return name, addressee
    return None


def _addressed(message: Message, entities: Mapping[MessageEntity, str], me: BotIdentity) -> bool:
    handle = "@" + me.username.lower()
    for entity, value in entities.items():
        if entity.type == MessageEntity.MENTION and value.lower() == handle:
            return True
        if (
            entity.type == MessageEntity.TEXT_MENTION
            and entity.user is not None
            and entity.user.id == me.id
        ):
            return True
    replied = message.reply_to_message
    if replied is None or replied.from_user is None or replied.from_user.id != me.id:
        return False
    # Every message in a forum topic "replies" to the topic's first message;
    # that is not the person replying to the bot.
    return not (message.is_topic_message and replied.message_id == message.message_thread_id)


_SUFFIX = re.compile(r"^(/[A-Za-z0-9_]+)@\S+")


def _strip_command_suffix(text: str) -> str:
    return _SUFFIX.sub(r"\1", text, count=1)


def _strip_leading_mention(text: str, me: BotIdentity) -> str:
    pattern = re.compile(rf"^\s*@{re.escape(me.username)}\b[\s,:;]*", re.IGNORECASE)
    stripped = pattern.sub("", text, count=1)
    # "@bot" alone still deserves an answer; keep it rather than send nothing.
    return stripped if stripped.strip() else text
