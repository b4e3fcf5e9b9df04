"""The suggested reply's Edit on Slack: a modal with the reply to change,
and its submission as the ``/suggest edit N TEXT`` command, sent by the
agent in the ticket's thread.

Pure functions over Slack's payloads, as the other converters; the adapter
opens the modal with ``views.open`` inside the 3 seconds Slack gives a click's
trigger.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from adapters.slack.convert import PLATFORM, unescape
from bot.handoff.copilot import suggestion_body
from bot.messages import say
from bot.types import ConversationRef, Inbound

EDIT_VIEW = "deskmate_suggestion_edit"
_BLOCK = "reply"
_INPUT = "text"
# Slack's limit on a plain-text input's value.
INPUT_LIMIT = 3000
_EDIT = re.compile(r"^/suggest edit (\d+)$")


def edit_request(command: str) -> int | None:
    """The suggestion a click's command asks to edit (``/suggest edit N`` alone)."""
    found = _EDIT.match(command.strip())
    return int(found.group(1)) if found else None


def edit_view(suggestion: int, inbound: Inbound, posted: str, language: str) -> dict[str, Any]:
    """The modal for editing suggestion ``suggestion``, clicked in ``inbound``'s
    thread, prefilled with the reply in the posted message ``posted``, its
    words in ``language`` (the agents' workspace's)."""
    where = {
        "team": inbound.ref.tenant,
        "channel": inbound.ref.chat,
        "thread": inbound.ref.thread,
        "suggestion": suggestion,
    }
    return {
        "type": "modal",
        "callback_id": EDIT_VIEW,
        "private_metadata": json.dumps(where),
        "title": {"type": "plain_text", "text": say("copilot.modal_title", language)[:24]},
        "submit": {"type": "plain_text", "text": say("copilot.modal_submit", language)[:24]},
        "close": {"type": "plain_text", "text": say("copilot.modal_cancel", language)[:24]},
        "blocks": [
            {
                "type": "input",
                "block_id": _BLOCK,
                "label": {"type": "plain_text", "text": say("copilot.modal_label", language)},
                "element": {
                    "type": "plain_text_input",
                    "action_id": _INPUT,
                    "multiline": True,
                    "max_length": INPUT_LIMIT,
                    "initial_value": suggestion_body(unescape(posted))[:INPUT_LIMIT],
                },
            }
        ],
    }


def submission_to_inbound(body: Mapping[str, Any]) -> Inbound:
    """A submitted edit as ``/suggest edit N TEXT`` from the agent in the ticket's
    thread. Raises ``ValueError`` for a payload without what Deskmate needs."""
    view = body.get("view") if isinstance(body.get("view"), Mapping) else {}
    try:
        where = json.loads(str(view.get("private_metadata") or ""))
        values = view["state"]["values"][_BLOCK][_INPUT]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a Deskmate edit: {exc!r}") from exc
    user_obj = body.get("user") if isinstance(body.get("user"), Mapping) else {}
    user = str(user_obj.get("id") or "")
    text = str(values.get("value") or "").strip()
    view_id = str(view.get("id") or "")
    if not (user and view_id and where.get("channel") and where.get("team")):
        raise ValueError("view_submission payload lacks its user, view or conversation")
    team, channel, thread = str(where["team"]), str(where["channel"]), str(where["thread"])
    return Inbound(
        ref=ConversationRef(PLATFORM, team, channel, thread),
        user=f"{team}/{user}",
        text=f"/suggest edit {int(where['suggestion'])} {text}",
        # One submission per modal: Slack never sends it again.
        event_id=f"view:{team}:{view_id}:{user}",
        user_name=str(user_obj.get("username") or user_obj.get("name") or ""),
        meta={"channel": channel, "thread_ts": thread, "kind": "action", "group": True},
    )
