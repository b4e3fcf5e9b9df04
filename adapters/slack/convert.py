"""Pure conversions between Slack payloads (plain dicts) and Deskmate's types.

Nothing here imports slack-bolt or slack-sdk, so every rule about which
events Deskmate answers, and how text is cut into Slack-sized pieces, is
tested with plain dictionaries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from bot.types import ConversationRef, Inbound

PLATFORM = "slack"
GREETING_COMMAND = "/start"

# Slack's documented limits: a section block's text holds 3,000 characters and
# a message's text 40,000 (beyond that Slack truncates it silently).
SECTION_LIMIT = 3_000
MESSAGE_LIMIT = 40_000
# A message may carry at most 50 blocks; sections cut at a boundary can be as
# short as half the limit, so a message's 12,000 characters need at most 9.
MAX_BLOCKS = 50
HEADER_LIMIT = 150
# Undocumented: Slack refuses blocks holding more than about 13,200 characters
# of text in all (``msg_blocks_too_long``), whatever each block's own limit.
BLOCKS_TEXT_LIMIT = 12_000
# The most one message Deskmate sends carries (escaped), so that it shows as
# blocks: longer texts go on in further messages.
POST_LIMIT = BLOCKS_TEXT_LIMIT

# The ticket buttons: their ``value`` is the ticket id, the thread is the ticket's.
CLAIM_ACTION = "ticket_claim"
RESOLVE_ACTION = "ticket_resolve"
TICKET_ACTIONS = {CLAIM_ACTION: "/claim", RESOLVE_ACTION: "/resolve"}
# Buttons under replies and notices: ``value`` is the command, the block id
# names the conversation's thread ("" in a DM), so a click lands where the
# conversation is whatever message of it carries the buttons.
COMMAND_ACTION = "deskmate_command"
COMMANDS_BLOCK = "commands:"
# Slack's limits: 25 elements in an actions block, 75 characters of button
# text, 2,000 of value.
ACTIONS_LIMIT = 25
BUTTON_TEXT_LIMIT = 75
BUTTON_VALUE_LIMIT = 2_000

# Message subtypes that carry a person's words. Everything else (edits,
# deletions, joins, bot posts, ...) is ignored.
_HUMAN_SUBTYPES = frozenset({"", "file_share", "thread_broadcast", "me_message"})
_DIRECT_CHANNEL_TYPES = frozenset({"im"})
_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")


class Route(StrEnum):
    """What the adapter should do with an Events API delivery."""

    MENTION = "mention"  # app_mention: open or continue a thread conversation
    DIRECT = "direct"  # a direct message: always answered
    THREAD = "thread"  # a reply in a channel thread: answered if Deskmate is in it
    SPACE = "space"  # any person's message in a support space: agents at work
    IGNORE = "ignore"


def route_event(
    body: Mapping[str, Any], *, bot_user_id: str = "", bot_id: str = "", listening: bool = False
) -> Route:
    """Decide how to treat one ``event_callback`` body.

    A channel message that mentions the bot is ignored here because Slack also
    delivers it as ``app_mention`` (with a different event id); answering both
    would reply twice. In a channel the manager ``listening`` to (a support
    space) it is the other way round: every message counts, mention or not,
    so the ``message`` event is taken and its ``app_mention`` twin dropped.
    """
    if body.get("type") != "event_callback":
        return Route.IGNORE
    event = body.get("event")
    if not isinstance(event, Mapping):
        return Route.IGNORE
    kind = event.get("type")
    if event.get("bot_id") or event.get("subtype") == "bot_message":
        return Route.IGNORE  # never talk to bots, ourselves included
    user = event.get("user")
    if not user or (bot_user_id and user == bot_user_id):
        return Route.IGNORE
    if bot_id and event.get("bot_id") == bot_id:
        return Route.IGNORE
    if not event.get("channel") or not event.get("ts"):
        return Route.IGNORE
    direct = event.get("channel_type") in _DIRECT_CHANNEL_TYPES
    if kind == "app_mention":
        return Route.IGNORE if listening and not direct else Route.MENTION
    if kind != "message":
        return Route.IGNORE
    if (event.get("subtype") or "") not in _HUMAN_SUBTYPES:
        return Route.IGNORE
    if direct:
        return Route.DIRECT
    if listening:
        return Route.SPACE
    thread_ts = event.get("thread_ts")
    if not thread_ts or thread_ts == event.get("ts"):
        return Route.IGNORE  # a top-level channel message that does not mention us
    if bot_user_id and f"<@{bot_user_id}" in (event.get("text") or ""):
        return Route.IGNORE  # delivered again as app_mention
    return Route.THREAD


def team_of(body: Mapping[str, Any]) -> str:
    """The workspace the delivery belongs to (the app's installation team)."""
    team = body.get("team_id")
    if not team:
        event = body.get("event") or {}
        team = event.get("team") or ""
    return str(team)


def thread_of(event: Mapping[str, Any]) -> str:
    """The thread a channel event belongs to: its ``thread_ts``, or its own ts
    for a top-level message (the reply starts a thread under it)."""
    return str(event.get("thread_ts") or event.get("ts") or "")


def clean_text(text: str, *, bot_user_id: str = "") -> str:
    """Drop mentions of the bot and undo Slack's ``&amp; &lt; &gt;`` escaping."""
    if bot_user_id:
        text = _MENTION.sub(lambda m: "" if m.group(1) == bot_user_id else m.group(0), text)
    else:
        # Without the bot's id only a leading mention can safely be assumed to be us.
        text = re.sub(r"^\s*<@[A-Z0-9]+(?:\|[^>]*)?>", "", text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    return unescape(text).strip()


def event_to_inbound(
    body: Mapping[str, Any], *, bot_user_id: str = "", space: bool = False
) -> Inbound:
    """Convert an ``event_callback`` body carrying a message or app_mention.

    Raises ``ValueError`` when a field Deskmate needs is missing. The caller
    decides with ``route_event`` whether the event is for Deskmate at all;
    ``space``: it was written in a support space. A message with files but no
    text keeps ``text`` empty and says what the files were in
    ``meta["attachment"]``, so a relay can tell what it could not pass on.
    """
    event = body.get("event")
    if not isinstance(event, Mapping):
        raise ValueError("Slack event body has no 'event' object")
    team = team_of(body)
    channel = event.get("channel")
    user = event.get("user")
    ts = event.get("ts")
    event_id = body.get("event_id")
    missing = [
        name
        for name, value in (
            ("team_id", team),
            ("event.channel", channel),
            ("event.user", user),
            ("event.ts", ts),
            ("event_id", event_id),
        )
        if not value
    ]
    if missing:
        raise ValueError(f"Slack event lacks {', '.join(missing)}")
    text = clean_text(str(event.get("text") or ""), bot_user_id=bot_user_id)
    attachment = describe_files(event.get("files"))
    if not text and not attachment and event.get("type") == "app_mention":
        text = GREETING_COMMAND  # a bare "@Deskmate" asks who it is
    direct = event.get("channel_type") in _DIRECT_CHANNEL_TYPES
    # A DM is one conversation per channel; in channels each thread is one. A
    # top-level message is the root of its own thread: in a support space its
    # ts matches no ticket, so only replies in a ticket's thread reach it.
    thread = "" if direct else thread_of(event)
    ref = ConversationRef(PLATFORM, team, str(channel), thread)
    meta: dict[str, Any] = {
        "channel": str(channel),
        "thread_ts": thread,
        "ts": str(ts),
        "kind": "event",
    }
    if attachment:
        meta["attachment"] = attachment
    if space:
        meta["space"] = True
    if not direct:
        meta["group"] = True
    return Inbound(ref=ref, user=f"{team}/{user}", text=text, event_id=str(event_id), meta=meta)


def describe_files(files: object) -> str:
    """What a message's files are, in words for whoever cannot receive them
    ("a file (PDF)", "an image (PNG)", "3 files"); "" when there are none."""
    if not isinstance(files, list) or not files:
        return ""
    if len(files) > 1:
        return f"{len(files)} files"
    file = files[0] if isinstance(files[0], Mapping) else {}
    kind = str(file.get("pretty_type") or file.get("filetype") or "").strip()
    noun = "an image" if str(file.get("mimetype") or "").startswith("image/") else "a file"
    return f"{noun} ({kind})" if kind else noun


def command_block(
    buttons: Sequence[tuple[str, str]], thread: str
) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """An actions block of (label, command) buttons for a message in the
    conversation whose thread is ``thread``, and the buttons left out because
    Slack would refuse them (an empty label or command, a command over 2,000
    characters, more than 25 buttons). None when no button is left."""
    elements: list[dict[str, Any]] = []
    refused: list[tuple[str, str]] = []
    for label, command in buttons:
        text = label.strip()
        if not text or not command.strip() or len(command) > BUTTON_VALUE_LIMIT:
            refused.append((label, command))
            continue
        if len(elements) == ACTIONS_LIMIT:
            refused.append((label, command))
            continue
        if len(text) > BUTTON_TEXT_LIMIT:
            text = text[: BUTTON_TEXT_LIMIT - 1] + "…"
        elements.append(
            {
                "type": "button",
                # Unique within the message, as Slack requires.
                "action_id": f"{COMMAND_ACTION}:{len(elements)}",
                "text": {"type": "plain_text", "text": text, "emoji": True},
                "value": command,
            }
        )
    if not elements:
        return None, refused
    return {"type": "actions", "block_id": COMMANDS_BLOCK + thread, "elements": elements}, refused


def is_command_action(action_id: str) -> bool:
    return action_id.startswith(COMMAND_ACTION + ":")


def action_to_inbound(body: Mapping[str, Any]) -> Inbound:
    """Convert a ``block_actions`` click into the command it stands for, sent
    by the person who clicked: a ticket button (``/claim``, ``/resolve``) in
    the ticket's thread, a reply's or notice's button (its ``value``) in the
    conversation its block names.

    Raises ``ValueError`` for a payload without what Deskmate needs. Slack
    never redelivers interactive payloads; ``action_ts`` is unique per click.
    """
    actions = body.get("actions")
    action = actions[0] if isinstance(actions, list) and actions else None
    if not isinstance(action, Mapping):
        raise ValueError("block_actions payload has no action")
    action_id = str(action.get("action_id") or "")
    block_id = str(action.get("block_id") or "")
    pressed = is_command_action(action_id) and block_id.startswith(COMMANDS_BLOCK)
    command = str(action.get("value") or "").strip() if pressed else TICKET_ACTIONS.get(action_id)
    if not command:
        raise ValueError(f"not a Deskmate button: {action_id!r}")
    user_obj = body.get("user") if isinstance(body.get("user"), Mapping) else {}
    team_obj = body.get("team") if isinstance(body.get("team"), Mapping) else {}
    container = body.get("container") if isinstance(body.get("container"), Mapping) else {}
    message = body.get("message") if isinstance(body.get("message"), Mapping) else {}
    channel_obj = body.get("channel") if isinstance(body.get("channel"), Mapping) else {}
    team = str(team_obj.get("id") or user_obj.get("team_id") or "")
    user = str(user_obj.get("id") or "")
    channel = str(container.get("channel_id") or channel_obj.get("id") or "")
    if pressed:
        thread = block_id.removeprefix(COMMANDS_BLOCK)
    else:
        # The ticket message is the thread's root; a button on a reply in the
        # thread would carry the root in thread_ts.
        thread = str(
            message.get("thread_ts") or container.get("message_ts") or message.get("ts") or ""
        )
    action_ts = str(action.get("action_ts") or "")
    missing = [
        name
        for name, value in (
            ("team.id", team),
            ("user.id", user),
            ("container.channel_id", channel),
            ("container.message_ts", thread or pressed),
            ("actions[0].action_ts", action_ts),
        )
        if not value
    ]
    if missing:
        raise ValueError(f"block_actions payload lacks {', '.join(missing)}")
    return Inbound(
        ref=ConversationRef(PLATFORM, team, channel, thread),
        user=f"{team}/{user}",
        text=command,
        event_id=f"action:{team}:{action_ts}:{user}",
        user_name=str(user_obj.get("username") or user_obj.get("name") or ""),
        meta={
            "channel": channel,
            "thread_ts": thread,
            "kind": "action",
            "space": not pressed,
            "value": str(action.get("value") or ""),
            # Buttons in a DM have no thread; in a channel they are in one.
            **({"group": True} if thread else {}),
        },
    )


def ticket_blocks(title: str, text: str, ticket_id: int) -> list[dict[str, Any]]:
    """A ticket as blocks: its title, its text, and the Claim and Resolve buttons."""
    header = title.strip()[:HEADER_LIMIT] or f"Ticket #{ticket_id}"
    # Room for the header and the buttons within Slack's 50 blocks and its
    # total of block text.
    body = split_first(text, BLOCKS_TEXT_LIMIT - HEADER_LIMIT)[0]
    sections = message_blocks(body)[: MAX_BLOCKS - 2]
    value = str(ticket_id)
    return [
        {"type": "header", "text": {"type": "plain_text", "text": header}},
        *sections,
        {
            "type": "actions",
            "block_id": f"ticket:{ticket_id}",
            "elements": [
                {
                    "type": "button",
                    "action_id": CLAIM_ACTION,
                    "text": {"type": "plain_text", "text": "Claim"},
                    "value": value,
                },
                {
                    "type": "button",
                    "action_id": RESOLVE_ACTION,
                    "text": {"type": "plain_text", "text": "Resolve"},
                    "style": "primary",
                    "value": value,
                },
            ],
        },
    ]


def command_to_inbound(payload: Mapping[str, Any]) -> Inbound:
    """Convert a ``/deskmate WORDS`` slash command into the command text ``/WORDS``.

    ``/deskmate`` alone means ``/help``. Slash commands carry no event id and are
    never redelivered, so the one-time ``trigger_id`` stands in for it.
    """
    team = str(payload.get("team_id") or "")
    channel = str(payload.get("channel_id") or "")
    user = str(payload.get("user_id") or "")
    trigger = str(payload.get("trigger_id") or "")
    missing = [
        n for n, v in (("team_id", team), ("channel_id", channel), ("user_id", user)) if not v
    ]
    if missing or not trigger:
        raise ValueError(f"Slack slash command lacks {', '.join(missing or ['trigger_id'])}")
    words = unescape(str(payload.get("text") or "")).strip().lstrip("/")
    text = f"/{words}" if words else "/help"
    return Inbound(
        ref=ConversationRef(PLATFORM, team, channel, ""),
        user=f"{team}/{user}",
        text=text,
        event_id=f"command:{trigger}",
        user_name=str(payload.get("user_name") or ""),
        meta={
            "channel": channel,
            "thread_ts": "",
            "kind": "command",
            "response_url": str(payload.get("response_url") or ""),
            **({} if _direct_channel(payload) else {"group": True}),
        },
    )


def _direct_channel(payload: Mapping[str, Any]) -> bool:
    """Whether a slash command was sent in a direct message (Slack names
    those channels ``directmessage``; their ids start with D)."""
    channel = str(payload.get("channel_id") or "")
    return payload.get("channel_name") == "directmessage" or channel.startswith("D")


def as_slash_commands(text: str, command: str = "/deskmate") -> str:
    """Rewrite command names at line starts (``/reset — ...``) as ``/deskmate reset``.

    Slack intercepts ``/reset`` typed in a message box as a slash command of its
    own, so the help shown in Slack names the form that works there.
    """
    return re.sub(r"(?m)^/(\w+)", lambda m: f"{command} {m.group(1)}", text)


def escape(text: str) -> str:
    """Slack's required escaping for message text (only these three characters)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _escaped_len(text: str) -> int:
    return len(text) + 4 * text.count("&") + 3 * (text.count("<") + text.count(">"))


def _fit(text: str, start: int, limit: int) -> int:
    """The largest end such that ``text[start:end]`` escapes to ``limit`` or less."""
    end = min(len(text), start + limit)
    if _escaped_len(text[start:end]) <= limit:
        return end  # the usual case: no escaping inside the window
    used = 0
    end = start
    while end < len(text):
        ch = text[end]
        used += 5 if ch == "&" else 4 if ch in "<>" else 1
        if used > limit:
            break
        end += 1
    return end


def split_first(text: str, limit: int = MESSAGE_LIMIT) -> tuple[str, str]:
    """Cut the first piece of ``split_text(text, limit)`` off ``text``.

    Returns ``(piece, rest)``; ``rest`` is ``""`` when the whole text fits.
    """
    if limit < 8:
        raise ValueError("limit must be at least 8 characters")
    end = _fit(text, 0, limit)
    if end >= len(text):
        return text, ""
    floor = end // 2
    cut = -1
    for sep in ("\n\n", "\n", " "):
        at = text.rfind(sep, floor, end)
        if at != -1:
            cut = at + len(sep)
            break
    if cut <= 0:
        cut = end
    return text[:cut], text[cut:]


def split_text(text: str, limit: int) -> list[str]:
    """Cut ``text`` into pieces whose escaped length is at most ``limit``.

    ``"".join(pieces) == text`` always holds: nothing is dropped, separators
    stay at the end of the piece they close. Cuts prefer a paragraph break,
    then a line break, then a space, searched in the second half of the window;
    a hard cut only when a window has none. Greedy and prefix-stable: once text
    follows a piece, later growth of the text never moves that piece's end,
    which lets a streaming renderer freeze full messages.
    """
    if limit < 8:
        raise ValueError("limit must be at least 8 characters")
    pieces: list[str] = []
    rest = text
    while rest:
        piece, rest = split_first(rest, limit)
        pieces.append(piece)
    return pieces


def message_chunks(text: str) -> list[str]:
    """The messages a reply needs: each fits one Slack message, blocks included."""
    return split_text(text, POST_LIMIT) if text else [""]


def message_blocks(chunk: str) -> list[dict[str, Any]]:
    """Section blocks for one message chunk (escaped, each under the section limit).

    Whitespace-only pieces are left out (Slack rejects empty sections); an
    empty list means "send the text alone", which is also the answer when the
    chunk would need more blocks, or more block text, than a message may carry.
    """
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": to_mrkdwn(escape(part))}}
        for part in split_text(chunk, SECTION_LIMIT)
        if part.strip()
    ]
    total = sum(len(b["text"]["text"]) for b in blocks)
    return blocks if len(blocks) <= MAX_BLOCKS and total <= BLOCKS_TEXT_LIMIT else []


_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)
_LINK = re.compile(r"\[([^\]\n|]+)\]\((https?://[^\s)]+)\)")
_HEADING = re.compile(r"(?m)^#{1,6}[ \t]+(.+?)[ \t#]*$")
_BOLD = re.compile(r"(\*\*|__)(?=\S)([^*_\n]+?)(?<=\S)\1")
_STRIKE = re.compile(r"~~(?=\S)([^~\n]+?)(?<=\S)~~")


def to_mrkdwn(escaped: str) -> str:
    """Turn the Markdown models write into Slack mrkdwn, outside code spans.

    ``**bold**`` / ``__bold__`` -> ``*bold*``, ``~~x~~`` -> ``~x~``, ``# Title``
    -> ``*Title*``, ``[text](https://url)`` -> ``<https://url|text>``. Works on
    already escaped text (so the ``<...>`` it adds are real links) and never
    makes text longer, so Slack's size limits still hold. Anything it does not
    recognise stays as written.
    """
    parts = _CODE.split(escaped)
    for i in range(0, len(parts), 2):  # even: outside code
        text = parts[i]
        text = _HEADING.sub(lambda m: "*" + m.group(1).replace("**", "") + "*", text)
        text = _LINK.sub(lambda m: f"<{m.group(2)}|{m.group(1)}>", text)
        text = _BOLD.sub(lambda m: f"*{m.group(2)}*", text)
        text = _STRIKE.sub(lambda m: f"~{m.group(1)}~", text)
        parts[i] = text
    return "".join(parts)
