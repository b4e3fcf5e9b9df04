"""Pure converters: Slack payloads as plain dicts in, Deskmate types out."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.slack.convert import (
    BLOCKS_TEXT_LIMIT,
    MESSAGE_LIMIT,
    SECTION_LIMIT,
    Route,
    as_slash_commands,
    clean_text,
    command_to_inbound,
    escape,
    event_to_inbound,
    message_blocks,
    message_chunks,
    route_event,
    split_text,
    to_mrkdwn,
    unescape,
)
from bot.types import ConversationRef

BOT = "UBOT"


def body(event: dict[str, Any], *, team: str = "T1", event_id: str = "Ev1") -> dict[str, Any]:
    return {
        "token": "x",
        "team_id": team,
        "api_app_id": "A1",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1_700_000_000,
        "event": event,
    }


def mention(**kw: Any) -> dict[str, Any]:
    event = {
        "type": "app_mention",
        "user": "U2",
        "text": f"<@{BOT}> where is my order?",
        "ts": "1700000000.000100",
        "channel": "C1",
        "event_ts": "1700000000.000100",
    }
    event.update(kw)
    return body(event)


def message(**kw: Any) -> dict[str, Any]:
    event = {
        "type": "message",
        "user": "U2",
        "text": "hello",
        "ts": "1700000001.000200",
        "channel": "D1",
        "channel_type": "im",
        "event_ts": "1700000001.000200",
    }
    event.update(kw)
    return body(event)


def test_top_level_mention_starts_a_thread_at_its_own_ts() -> None:
    inbound = event_to_inbound(mention(), bot_user_id=BOT)
    assert inbound.ref == ConversationRef("slack", "T1", "C1", "1700000000.000100")
    assert inbound.user == "T1/U2"
    assert inbound.platform_user == "slack:T1/U2"
    assert inbound.text == "where is my order?"
    assert inbound.event_id == "Ev1"
    assert inbound.meta["thread_ts"] == "1700000000.000100"
    assert inbound.meta["ts"] == "1700000000.000100"
    assert route_event(mention(), bot_user_id=BOT) is Route.MENTION


def test_a_bare_mention_asks_for_the_introduction() -> None:
    assert event_to_inbound(mention(text=f"<@{BOT}>"), bot_user_id=BOT).text == "/start"
    assert event_to_inbound(message(text=""), bot_user_id=BOT).text == ""


def test_mention_inside_a_thread_continues_that_thread() -> None:
    inbound = event_to_inbound(mention(thread_ts="1699999999.000001"), bot_user_id=BOT)
    assert inbound.ref.thread == "1699999999.000001"
    assert inbound.meta["ts"] == "1700000000.000100"


def test_direct_message_is_one_conversation_per_channel() -> None:
    a = event_to_inbound(message())
    b = event_to_inbound(message(ts="1700000002.1", thread_ts="1700000001.000200"))
    assert a.ref == b.ref == ConversationRef("slack", "T1", "D1", "")
    assert route_event(message(), bot_user_id=BOT) is Route.DIRECT


def test_same_channel_id_in_two_workspaces_gives_two_conversations() -> None:
    a = event_to_inbound(message())
    b = event_to_inbound(body(message()["event"], team="T2"))
    assert a.ref.key != b.ref.key
    assert b.user == "T2/U2"


@pytest.mark.parametrize(
    "event",
    [
        {"subtype": "message_changed"},
        {"subtype": "message_deleted"},
        {"subtype": "channel_join"},
        {"subtype": "bot_message", "bot_id": "B9"},
        {"bot_id": "BBOT"},
        {"user": BOT},
        {"user": ""},
        {"channel": ""},
    ],
)
def test_edits_deletes_and_bot_messages_are_ignored(event: dict[str, Any]) -> None:
    assert route_event(message(**event), bot_user_id=BOT, bot_id="BBOT") is Route.IGNORE


def test_channel_messages_route_by_thread_and_mention() -> None:
    top = message(channel="C1", channel_type="channel")
    assert route_event(top, bot_user_id=BOT) is Route.IGNORE
    reply = message(channel="C1", channel_type="channel", thread_ts="1700000000.000100")
    assert route_event(reply, bot_user_id=BOT) is Route.THREAD
    # Delivered as app_mention too; answering the message copy would reply twice.
    with_mention = message(
        channel="C1", channel_type="channel", thread_ts="1.0", text=f"<@{BOT}> again"
    )
    assert route_event(with_mention, bot_user_id=BOT) is Route.IGNORE
    broadcast = message(
        channel="C1", channel_type="channel", thread_ts="1.0", subtype="thread_broadcast"
    )
    assert route_event(broadcast, bot_user_id=BOT) is Route.THREAD


def test_non_event_bodies_are_ignored() -> None:
    assert route_event({"type": "url_verification", "challenge": "x"}) is Route.IGNORE
    assert route_event({"type": "event_callback"}) is Route.IGNORE
    assert route_event(body({"type": "reaction_added", "user": "U2"})) is Route.IGNORE


def test_missing_fields_raise_a_clear_error() -> None:
    broken = mention()
    del broken["event_id"]
    with pytest.raises(ValueError, match="event_id"):
        event_to_inbound(broken)
    with pytest.raises(ValueError, match="event"):
        event_to_inbound({"type": "event_callback"})


def test_clean_text_drops_only_the_bot_mention_and_unescapes() -> None:
    assert clean_text(f"<@{BOT}> ask <@U7> about a &lt;b&gt; &amp; c", bot_user_id=BOT) == (
        "ask <@U7> about a <b> & c"
    )
    assert clean_text("<@UOTHER|bob> hi") == "hi"


def test_slash_command_becomes_command_text() -> None:
    payload = {
        "command": "/deskmate",
        "text": "help",
        "team_id": "T1",
        "channel_id": "C1",
        "user_id": "U2",
        "user_name": "ann",
        "trigger_id": "123.456.abc",
        "response_url": "http://127.0.0.1/hooks/1",
    }
    inbound = command_to_inbound(payload)
    assert inbound.text == "/help"
    assert inbound.event_id == "command:123.456.abc"
    assert inbound.ref == ConversationRef("slack", "T1", "C1", "")
    assert inbound.meta["response_url"] == "http://127.0.0.1/hooks/1"
    assert command_to_inbound({**payload, "text": ""}).text == "/help"
    assert command_to_inbound({**payload, "text": "stats  week"}).text == "/stats  week"
    with pytest.raises(ValueError, match="team_id"):
        command_to_inbound({**payload, "team_id": ""})


def test_help_names_the_slash_command_form() -> None:
    text = "Here is what I can do:\n/help — list commands\n/reset — forget\nSend /help"
    assert as_slash_commands(text) == (
        "Here is what I can do:\n/deskmate help — list commands\n/deskmate reset — forget\n"
        "Send /help"
    )


def test_escape_round_trips() -> None:
    text = "a < b && c > d"
    assert unescape(escape(text)) == text
    assert escape(text) == "a &lt; b &amp;&amp; c &gt; d"


def test_split_keeps_every_character_and_respects_the_limit() -> None:
    text = ("word " * 9_000) + "\n\n" + ("x" * 7_000) + "\n" + "tail <&>" * 50
    pieces = split_text(text, SECTION_LIMIT)
    assert "".join(pieces) == text
    assert all(len(escape(p)) <= SECTION_LIMIT for p in pieces)
    # A space inside the window is preferred over a hard cut.
    assert pieces[0].endswith(" ")


def test_split_prefers_paragraph_breaks() -> None:
    text = "a" * 60 + "\n\n" + "b" * 30 + "\n" + "c" * 30
    assert split_text(text, 100) == ["a" * 60 + "\n\n", "b" * 30 + "\n" + "c" * 30]


def test_split_hard_cuts_text_without_spaces() -> None:
    text = "z" * 250
    assert split_text(text, 100) == ["z" * 100, "z" * 100, "z" * 50]


def test_split_counts_escaped_length() -> None:
    text = "<" * 30
    pieces = split_text(text, 10)
    assert "".join(pieces) == text
    assert all(len(escape(p)) <= 10 for p in pieces)


def test_split_is_prefix_stable() -> None:
    text = " ".join(f"w{i}" for i in range(5_000))
    final = split_text(text, 1_000)
    for n in range(1_000, len(text), 777):
        partial = split_text(text[:n], 1_000)
        assert partial[:-1] == final[: len(partial) - 1]


def test_a_45000_character_answer_is_split_into_messages_that_fit_as_blocks() -> None:
    text = ("lorem ipsum dolor sit amet " * 1_700)[:45_000]
    chunks = message_chunks(text)
    assert len(chunks) == 4
    assert "".join(chunks) == text
    for chunk in chunks:
        assert len(escape(chunk)) <= MESSAGE_LIMIT
        blocks = message_blocks(chunk)
        assert 0 < len(blocks) <= 50
        assert all(len(b["text"]["text"]) <= SECTION_LIMIT for b in blocks)
        assert sum(len(b["text"]["text"]) for b in blocks) <= BLOCKS_TEXT_LIMIT
        assert "".join(unescape(b["text"]["text"]) for b in blocks).strip() == chunk.strip()


def test_blocks_over_slacks_total_are_not_offered() -> None:
    # Slack refuses a message whose blocks hold more than about 13,000
    # characters in all, though each section is within its own limit.
    text = "word " * 2_700  # 13,500 characters
    assert message_blocks(text) == []
    assert message_blocks(text[:BLOCKS_TEXT_LIMIT])


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**Refunds** take 5 days", "*Refunds* take 5 days"),
        ("__note__: ok", "*note*: ok"),
        ("~~old~~ new", "~old~ new"),
        ("## Shipping **times**\nWithin a week", "*Shipping times*\nWithin a week"),
        (
            "See [our policy](https://ex.com/p?a=1&b=2).",
            "See <https://ex.com/p?a=1&amp;b=2|our policy>.",
        ),
        ("`**not bold**` and **bold**", "`**not bold**` and *bold*"),
        ("```\n# not a heading\n**x**\n```", "```\n# not a heading\n**x**\n```"),
        ("a < b and 2 ** 3", "a &lt; b and 2 ** 3"),
        ("[bad](javascript:alert(1))", "[bad](javascript:alert(1))"),
    ],
)
def test_markdown_becomes_slack_mrkdwn(markdown: str, mrkdwn: str) -> None:
    converted = to_mrkdwn(escape(markdown))
    assert converted == mrkdwn
    assert len(converted) <= len(escape(markdown))
