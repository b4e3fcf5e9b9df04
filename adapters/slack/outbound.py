"""Writing to Slack: messages posted and edited, each in its channel's next write
slot, with plain text where Slack refuses the blocks; and the outbox's side of
``bot.types.Channel`` (``post``, ``open_ticket``, ``send``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError

from adapters.common import EditPacer
from adapters.slack.convert import (
    MESSAGE_LIMIT,
    POST_LIMIT,
    command_block,
    escape,
    message_blocks,
    split_first,
    split_text,
    ticket_blocks,
)
from adapters.slack.render import pacing_keys, take_slot
from adapters.slack.workspaces import Workspaces
from bot.types import ConversationRef, DeliveryUnconfirmed, TicketThread, Undeliverable

log = logging.getLogger(__name__)

# Refusals of a message's blocks that the same text without blocks gets past.
_BLOCK_ERRORS = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_blocks_too_long"})
# What the operator can do about the Web API errors a reply commonly meets.
HINTS = {
    "not_in_channel": " (invite the bot: /invite @Deskmate in that channel)",
    "channel_not_found": " (the channel is gone, or private and the bot is not in it)",
    "is_archived": " (the channel is archived)",
    "missing_scope": " (add the scopes in adapters/slack/manifest.yaml and reinstall the app)",
    "invalid_auth": " (SLACK_BOT_TOKEN is no longer valid)",
    "token_revoked": " (the app was uninstalled or its token revoked)",
    "account_inactive": " (the app was uninstalled or its token revoked)",
    "thread_not_found": " (the thread's first message was deleted)",
}
# Refusals that sending again cannot fix: the outbox gives up on them at once.
# chat.update refusals of this message alone: it is posted anew instead.
_NOT_EDITABLE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
_UNDELIVERABLE = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "thread_not_found",
    }
)


class Outbound:
    """Posts and edits messages with the client of the message's workspace.

    The ``pacer`` is shared with the reply renderer: every write, streamed
    reply or outbox message, takes a slot of its channel (posts) or of its
    channel and workspace (edits).
    """

    def __init__(self, workspaces: Workspaces, pacer: EditPacer) -> None:
        self.workspaces = workspaces
        self.pacer = pacer

    async def send(self, ref: ConversationRef, text: str) -> None:
        """Post ``text`` (split to Slack's limits) into the conversation's thread."""
        if not text.strip():
            raise ValueError("Slack refuses empty messages; nothing to send")
        for chunk in split_text(text, POST_LIMIT):
            await self.paced_post(ref.tenant, ref.chat, ref.thread, chunk)

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

        Raises ``Undeliverable`` for a refusal that sending again cannot fix,
        and ``DeliveryUnconfirmed`` when the message may be in the channel
        although the call failed: no answer in time, or the connection dropped,
        once the request was sent (Slack has no idempotency key for it), or a
        later part failing after the first arrived.
        """
        if not text.strip():
            raise Undeliverable("Slack refuses empty messages")
        # Slack has no reply without a thread: a reply hangs off its message's thread.
        thread = ref.thread or reply_to
        actions = actions_block(buttons, ref)
        first = ""
        chunks = split_text(text, POST_LIMIT)
        try:
            for i, chunk in enumerate(chunks):
                last = i == len(chunks) - 1
                ts = await self.paced_post(
                    ref.tenant, ref.chat, thread, chunk, actions=actions if last else None
                )
                first = first or ts
        except (TimeoutError, aiohttp.ServerDisconnectedError) as exc:
            raise DeliveryUnconfirmed(
                f"Slack did not confirm a message for {ref.chat}: {exc!r}"
            ) from exc
        except SlackApiError as exc:
            _refuse_for_good(exc, ref.chat)
            if first:
                raise DeliveryUnconfirmed(
                    f"Slack refused a later part of a message for {ref.chat} after the first "
                    f"arrived: {exc.response.get('error')}"
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
        """Replace message ``message``'s text and buttons; ``Undeliverable`` when the
        text no longer fits one message or Slack will not update that message."""
        chunks = split_text(text, POST_LIMIT)
        if len(chunks) != 1:
            raise Undeliverable(f"editing a message in {ref.chat}: the text needs {len(chunks)}")
        try:
            await self.paced_update(
                ref.tenant, ref.chat, message, chunks[0], actions=actions_block(buttons, ref)
            )
        except SlackApiError as exc:
            _refuse_for_good(exc, ref.chat)
            if exc.response.get("error") in _NOT_EDITABLE:
                raise Undeliverable(
                    f"Slack will not update {message} in {ref.chat}: {exc.response.get('error')}"
                ) from exc
            raise

    async def open_ticket(
        self, space: ConversationRef, *, title: str, text: str, ticket_id: int
    ) -> TicketThread:
        """Post a ticket at the top of the support channel, with Claim and Resolve
        buttons; agents answer in its thread."""
        fallback = escape(split_first(text, MESSAGE_LIMIT)[0])
        kwargs: dict[str, Any] = {"channel": space.chat, "text": fallback}
        client = await self.workspaces.client_for(space.tenant)
        keys = pacing_keys(space.tenant, space.chat)[:1]
        await take_slot(self.pacer, *keys)
        try:
            try:
                response = await client.chat_postMessage(
                    **kwargs, blocks=ticket_blocks(title, text, ticket_id)
                )
            except SlackApiError as exc:
                if exc.response.get("error") not in _BLOCK_ERRORS:
                    raise
                # Without buttons agents still have the words (claim, resolve).
                log.warning("Slack: ticket #%s refused with blocks; posting text", ticket_id)
                response = await client.chat_postMessage(**kwargs)
        except SlackApiError as exc:
            _refuse_for_good(exc, space.chat)
            raise
        finally:
            self.pacer.mark(*keys)
        ts = str(response["ts"])
        return TicketThread(thread=ts, message=ts)

    async def paced_post(
        self,
        team: str,
        channel: str,
        thread: str,
        text: str,
        *,
        actions: dict[str, Any] | None = None,
    ) -> str:
        """``post_message`` in the channel's next write slot (about one message a second)."""
        keys = pacing_keys(team, channel)[:1]
        await take_slot(self.pacer, *keys)
        try:
            return await self.post_message(channel, thread, text, team=team, actions=actions)
        finally:
            self.pacer.mark(*keys)

    async def paced_update(
        self, team: str, channel: str, ts: str, text: str, *, actions: dict[str, Any] | None
    ) -> None:
        """``update_message`` in the next slot of the channel and the workspace (Tier 3)."""
        keys = pacing_keys(team, channel)
        await take_slot(self.pacer, *keys)
        try:
            await self.update_message(channel, ts, text, team=team, actions=actions)
        finally:
            self.pacer.mark(*keys)

    async def post_message(
        self,
        channel: str,
        thread: str,
        text: str,
        *,
        team: str = "",
        actions: dict[str, Any] | None = None,
    ) -> str:
        """Post one message (unpaced; ``text`` must fit one); returns its ts."""
        kwargs: dict[str, Any] = {"channel": channel, "text": escape(text)}
        if thread:
            kwargs["thread_ts"] = thread
        blocks = _with_actions(message_blocks(text), actions)
        client = await self.workspaces.client_for(team)
        try:
            response = await client.chat_postMessage(**kwargs, blocks=blocks or None)
        except SlackApiError as exc:
            if exc.response.get("error") not in _BLOCK_ERRORS:
                raise
            # Fall back to plain text when Slack rejects the blocks.
            response = await client.chat_postMessage(**kwargs)
        return str(response["ts"])

    async def update_message(
        self,
        channel: str,
        ts: str,
        text: str,
        *,
        team: str = "",
        actions: dict[str, Any] | None = None,
    ) -> None:
        """Replace the text (and buttons) of message ``ts`` (unpaced)."""
        kwargs: dict[str, Any] = {"channel": channel, "ts": ts, "text": escape(text)}
        blocks = _with_actions(message_blocks(text), actions)
        client = await self.workspaces.client_for(team)
        try:
            await client.chat_update(**kwargs, blocks=blocks)
        except SlackApiError as exc:
            if exc.response.get("error") not in _BLOCK_ERRORS:
                raise
            await client.chat_update(**kwargs, blocks=[])


def actions_block(
    buttons: Sequence[tuple[str, str]], ref: ConversationRef
) -> dict[str, Any] | None:
    """The actions block for a message in conversation ``ref``; a button Slack
    would refuse is left out and logged (the text still says what to type)."""
    if not buttons:
        return None
    block, refused = command_block(buttons, ref.thread)
    for label, command in refused:
        log.warning(
            "Slack: button %r left out of a message to %s: Slack takes 25 buttons with a "
            "command of 1-2,000 characters (%r); people have to type it",
            label,
            ref.key,
            command[:100],
        )
    return block


def _with_actions(
    blocks: list[dict[str, Any]], actions: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Section blocks with the buttons under them. Without sections (text Slack
    would not take as blocks) the buttons are dropped: blocks would hide the text."""
    return [*blocks, actions] if blocks and actions is not None else blocks


def _refuse_for_good(exc: SlackApiError, channel: str) -> None:
    """Raise ``Undeliverable`` (saying what the operator can do) for a refusal
    that retrying cannot fix; return for any other, which the outbox retries."""
    error = str(exc.response.get("error") or "")
    if error in _UNDELIVERABLE:
        hint = HINTS.get(error, "")
        raise Undeliverable(f"Slack refused a message for {channel}: {error}{hint}") from exc
