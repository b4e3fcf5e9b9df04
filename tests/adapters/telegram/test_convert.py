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
        event_id="5001:42:17",
        user_name="Alice",
        meta={"message_id": 17, "chat_type": "private", "thread_id": None},
    )
    assert inbound.platform_user == "telegram:42"


def test_event_id_tells_a_new_update_sequence_from_a_redelivery() -> None:
    # After a week without updates Telegram may reuse a lower update_id.
    before = update_to_inbound(message(42, "hi"), me=ME)
    again = update_to_inbound(message(42, "hi"), me=ME)
    reused = update_to_inbound(
        build_message_update(update_id=5001, message_id=90, chat_id=42, text="new"), me=ME
    )
    other_chat = update_to_inbound(message(43, "hi"), me=ME)
    assert before is not None and again is not None
    assert reused is not None and other_chat is not None
    assert before.event_id == again.event_id
    assert len({before.event_id, reused.event_id, other_chat.event_id}) == 3


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


SPACE = ConversationRef("telegram", "777", "-1007")


def support_space(ref: ConversationRef) -> bool:
    return ref.chat == SPACE.chat


def test_every_message_in_a_support_space_counts() -> None:
    update = message(-1007, "I'll take this one", user_id=5)
    assert isinstance(classify_update(update, me=ME), Ignored)
    inbound = update_to_inbound(update, me=ME, listens_to=support_space)
    assert inbound is not None and inbound.text == "I'll take this one"
    assert inbound.ref == SPACE and inbound.user == "5"
    # Elsewhere a group still has to address the bot.
    assert update_to_inbound(message(-1008, "hi all"), me=ME, listens_to=support_space) is None


def test_reply_to_names_the_message_replied_to() -> None:
    ticket = {
        "message_id": 31,
        "date": 0,
        "chat": {"id": -1007, "type": "supergroup"},
        "from": BOT_USER,
        "text": "Ticket #1",
    }
    inbound = update_to_inbound(
        message(-1007, "sorry for the wait", reply_to=ticket), me=ME, listens_to=support_space
    )
    assert inbound is not None and inbound.meta["reply_to"] == "31"
    plain = update_to_inbound(message(-1007, "lunch?"), me=ME, listens_to=support_space)
    assert plain is not None and "reply_to" not in plain.meta


def test_a_topics_first_message_is_no_reply() -> None:
    root = {
        "message_id": 55,
        "date": 0,
        "chat": {"id": -1007, "type": "supergroup", "is_forum": True},
        "from": BOT_USER,
        "forum_topic_created": {"name": "#1 Alice (slack)", "icon_color": 1},
    }
    inbound = update_to_inbound(
        message(-1007, "on it", thread_id=55, reply_to=root), me=ME, listens_to=support_space
    )
    assert inbound is not None
    assert inbound.ref == ConversationRef("telegram", "777", "-1007", "55")
    assert "reply_to" not in inbound.meta
    picked = dict(root, message_id=60, text="Alice: still broken")
    del picked["forum_topic_created"]
    inbound = update_to_inbound(
        message(-1007, "which part?", thread_id=55, reply_to=picked),
        me=ME,
        listens_to=support_space,
    )
    assert inbound is not None and inbound.meta["reply_to"] == "60"


def test_service_messages_and_bots_in_a_support_space_are_ignored() -> None:
    created = message(
        -1007,
        None,
        thread_id=56,
        extra={"forum_topic_created": {"name": "Billing", "icon_color": 1}},
    )
    result = classify_update(created, me=ME, listens_to=support_space)
    assert isinstance(result, Ignored) and "service message" in result.reason
    joined = message(
        -1007, None, extra={"new_chat_members": [{"id": 8, "is_bot": False, "first_name": "Eve"}]}
    )
    assert isinstance(classify_update(joined, me=ME, listens_to=support_space), Ignored)
    own = message(-1007, "Ticket #1", extra={"from": BOT_USER})
    assert isinstance(classify_update(own, me=ME, listens_to=support_space), Ignored)


def test_messages_without_text_say_what_they_carry() -> None:
    photo = {"file_id": "p", "file_unique_id": "pu", "width": 1, "height": 1}
    document = {"file_id": "d", "file_unique_id": "du"}
    voice = {"file_id": "v", "file_unique_id": "vu", "duration": 2}
    for extra, described in (
        ({"photo": [photo]}, "a photo"),
        ({"document": document}, "a file"),
        ({"voice": voice}, "a voice message"),
        (
            {
                "animation": {**document, "width": 1, "height": 1, "duration": 1},
                "document": document,
            },
            "a GIF",
        ),
    ):
        inbound = update_to_inbound(
            message(-1007, None, extra=extra), me=ME, listens_to=support_space
        )
        assert inbound is not None and inbound.text == ""
        assert inbound.meta["attachment"] == described
        private = update_to_inbound(message(42, None, extra=extra), me=ME)
        assert private is not None and private.meta["attachment"] == described
    captioned = update_to_inbound(
        message(42, None, extra={"caption": "this one", "photo": [photo]}), me=ME
    )
    # The caption is the text; the photo itself is still named.
    assert captioned is not None and captioned.text == "this one"
    assert captioned.meta["attachment"] == "a photo"
