"""The update converter, fed the JSON Telegram sends."""

from __future__ import annotations

from typing import Any

from adapters.telegram.convert import (
    BotIdentity,
    ChatMoved,
    Ignored,
    MembershipChanged,
    classify_update,
    update_to_inbound,
)
from bot.types import ConversationRef, Inbound
from tests.fakes.telegram_api import build_message_update

ME = BotIdentity(id=777, username="deskmate_bot")
BOT_USER = {"id": 777, "is_bot": True, "first_name": "Deskmate", "username": "deskmate_bot"}


def message(chat_id: int, text: str | None, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("chat_type", "private" if chat_id > 0 else "supergroup")
    return build_message_update(update_id=5001, message_id=17, chat_id=chat_id, text=text, **kwargs)


def test_private_message_becomes_inbound() -> None:
    inbound = update_to_inbound(message(42, "How do I reset my password?", user_id=42), me=ME)
    assert inbound == Inbound(
        ref=ConversationRef("telegram", "777", "42", ""),
        user="42",
        text="How do I reset my password?",
        event_id="5001",
        user_name="Alice",
        meta={"message_id": 17, "chat_type": "private", "thread_id": None},
    )
    assert inbound.platform_user == "telegram:42"


def test_private_message_without_text_is_still_answered() -> None:
    update = message(
        42,
        None,
        extra={
            "sticker": {
                "file_id": "f",
                "file_unique_id": "u",
                "width": 1,
                "height": 1,
                "is_animated": False,
                "is_video": False,
                "type": "regular",
            }
        },
    )
    inbound = update_to_inbound(update, me=ME)
    assert inbound is not None and inbound.text == ""


def test_caption_counts_as_text() -> None:
    update = message(42, None, extra={"caption": "what is this?", "photo": []})
    inbound = update_to_inbound(update, me=ME)
    assert inbound is not None and inbound.text == "what is this?"


def test_group_message_needs_addressing() -> None:
    plain = message(-1001, "anyone know the wifi password?")
    result = classify_update(plain, me=ME)
    assert isinstance(result, Ignored) and "not addressed" in result.reason


def test_group_mention_is_answered_and_stripped() -> None:
    inbound = update_to_inbound(message(-1001, "@deskmate_bot where is my order?"), me=ME)
    assert inbound is not None
    assert inbound.text == "where is my order?"
    assert inbound.ref.chat == "-1001"
    # Mentioning someone else is not addressing the bot.
    assert update_to_inbound(message(-1001, "@someone_else where is my order?"), me=ME) is None


def test_mention_match_is_case_insensitive_and_respects_utf16_offsets() -> None:
    inbound = update_to_inbound(message(-1001, "😀😀 hey @Deskmate_Bot help"), me=ME)
    assert inbound is not None
    assert inbound.text == "😀😀 hey @Deskmate_Bot help"


def test_text_mention_of_the_bot_is_addressing() -> None:
    text = "Deskmate please help"
    entities = [{"type": "text_mention", "offset": 0, "length": 8, "user": BOT_USER}]
    assert update_to_inbound(message(-1001, text, entities=entities), me=ME) is not None
    other = {"id": 5, "is_bot": False, "first_name": "Bob"}
    entities = [{"type": "text_mention", "offset": 0, "length": 8, "user": other}]
    assert update_to_inbound(message(-1001, text, entities=entities), me=ME) is None


def test_reply_to_the_bot_is_addressing() -> None:
    bot_message = {
        "message_id": 9,
        "date": 0,
        "chat": {"id": -1001, "type": "supergroup"},
        "from": BOT_USER,
        "text": "Hi, how can I help?",
    }
    inbound = update_to_inbound(message(-1001, "my order is late", reply_to=bot_message), me=ME)
    assert inbound is not None and inbound.text == "my order is late"
    human = dict(bot_message, **{"from": {"id": 5, "is_bot": False, "first_name": "Bob"}})
    assert update_to_inbound(message(-1001, "my order is late", reply_to=human), me=ME) is None


def test_commands_are_addressing_and_lose_the_bot_suffix() -> None:
    inbound = update_to_inbound(message(-1001, "/help@deskmate_bot billing"), me=ME)
    assert inbound is not None and inbound.text == "/help billing"
    inbound = update_to_inbound(message(-1001, "/reset"), me=ME)
    assert inbound is not None and inbound.text == "/reset"
    other = classify_update(message(-1001, "/help@other_bot"), me=ME)
    assert isinstance(other, Ignored) and "another bot" in other.reason
    inbound = update_to_inbound(message(42, "/start"), me=ME)
    assert inbound is not None and inbound.text == "/start"


def test_forum_topics_are_separate_conversations() -> None:
    inbound = update_to_inbound(message(-1002, "@deskmate_bot refund?", thread_id=55), me=ME)
    assert inbound is not None
    assert inbound.ref == ConversationRef("telegram", "777", "-1002", "55")
    assert inbound.meta["thread_id"] == 55


def test_topic_root_from_the_bot_is_not_a_reply_to_it() -> None:
    # Inside a topic the bot created, every message "replies" to the topic's root.
    root = {
        "message_id": 55,
        "date": 0,
        "chat": {"id": -1002, "type": "supergroup"},
        "from": BOT_USER,
        "forum_topic_created": {"name": "Help", "icon_color": 1},
    }
    update = message(-1002, "chatting among ourselves", thread_id=55, reply_to=root)
    assert update_to_inbound(update, me=ME) is None


def test_bots_channels_and_edits_are_ignored() -> None:
    from_bot = message(42, "hello", extra={"from": {"id": 9, "is_bot": True, "first_name": "B"}})
    assert isinstance(classify_update(from_bot, me=ME), Ignored)
    edited = {"update_id": 3, "edited_message": message(42, "x")["message"]}
    assert isinstance(classify_update(edited, me=ME), Ignored)
    channel = message(-1003, "/help", chat_type="channel")
    assert isinstance(classify_update(channel, me=ME), Ignored)


def test_group_migration_is_reported() -> None:
    update = message(-55, None, chat_type="group", extra={"migrate_to_chat_id": -1009})
    result = classify_update(update, me=ME)
    assert result == ChatMoved(
        5001,
        ConversationRef("telegram", "777", "-55"),
        ConversationRef("telegram", "777", "-1009"),
    )


def test_blocking_the_bot_is_reported() -> None:
    def member(status: str) -> dict[str, Any]:
        return {
            "update_id": 8,
            "my_chat_member": {
                "chat": {"id": 42, "type": "private", "first_name": "Alice"},
                "from": {"id": 42, "is_bot": False, "first_name": "Alice"},
                "date": 0,
                "old_chat_member": {"status": "member", "user": BOT_USER},
                "new_chat_member": {"status": status, "user": BOT_USER, "until_date": 0},
            },
        }

    assert classify_update(member("kicked"), me=ME) == MembershipChanged(
        8, ConversationRef("telegram", "777", "42"), active=False
    )
    assert classify_update(member("member"), me=ME) == MembershipChanged(
        8, ConversationRef("telegram", "777", "42"), active=True
    )
