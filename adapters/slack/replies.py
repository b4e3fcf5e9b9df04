"""Showing the manager's reply to one Slack event: streamed into the event's
thread (or DM) with paced edits and the reply's buttons under its last
message, or, for a slash command, posted privately to its ``response_url``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters.slack.convert import MESSAGE_LIMIT, as_slash_commands, escape, split_text
from adapters.slack.outbound import Outbound, actions_block
from adapters.slack.render import PLACEHOLDER, pacing_keys, thread_renderer
from bot.types import Inbound, Render, Reply, ReplyKind, Undeliverable

log = logging.getLogger(__name__)

SLASH_COMMAND = "/deskmate"
SEEN_REACTION = "eyes"
# How long taking back an unfinished answer may take: at shutdown it must
# fit in the time a cancelled answer gets to unwind.
CLEANUP_TIMEOUT = 1.5


class Replies:
    """Renderers of replies, writing through ``outbound``."""

    def __init__(self, outbound: Outbound) -> None:
        self._outbound = outbound

    def in_thread(self, inbound: Inbound) -> Render:
        """Render into the thread (or DM) ``inbound`` came from."""
        channel = str(inbound.meta.get("channel") or inbound.ref.chat)
        thread = str(inbound.meta.get("thread_ts") or inbound.ref.thread)
        team = inbound.ref.tenant
        outbound = self._outbound

        async def render(reply: Reply) -> None:
            if not reply.should_render:
                return
            sink = _ThreadSink(
                outbound, channel, thread, team, actions_block(reply.buttons, inbound.ref)
            )
            renderer = thread_renderer(
                sink=sink,
                pacer=outbound.pacer,
                keys=pacing_keys(team, channel),
                placeholder=PLACEHOLDER if reply.kind is ReplyKind.ANSWER else "",
            )

            async def chunks() -> AsyncIterator[str]:
                try:
                    async for chunk in reply:
                        yield chunk
                finally:
                    sink.final = True

            try:
                await renderer.render(chunks())
                await sink.finish(renderer.messages)
            except BaseException:
                # The event stays stored as unanswered and is answered again
                # (Slack's redelivery, the next start): a placeholder or half
                # an answer left here would sit beside that answer for good.
                await self._take_back(team, channel, renderer.messages)
                raise

        return render

    async def _take_back(self, team: str, channel: str, messages: list[str]) -> None:
        """Delete the messages of an answer that did not finish; best effort, bounded."""
        if not messages:
            return
        try:
            async with asyncio.timeout(CLEANUP_TIMEOUT):
                client = await self._outbound.workspaces.client_for(team)
                for ts in messages:
                    await client.chat_delete(channel=channel, ts=ts)
        except (SlackApiError, Undeliverable, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("Slack: could not take back an unfinished answer in %s: %r", channel, exc)

    def to_command(self, inbound: Inbound) -> Render:
        """Render a slash command's reply to the person alone (its ``response_url``),
        or into the conversation when Slack gave no ``response_url``."""
        response_url = str(inbound.meta.get("response_url") or "")

        async def render(reply: Reply) -> None:
            if not reply.should_render:
                return
            text = as_slash_commands(await reply.collect(), SLASH_COMMAND)
            if not response_url:
                await self._outbound.send(inbound.ref, text)
                return
            hook = AsyncWebhookClient(response_url)
            # A response_url takes five posts; commands answer in far fewer.
            for chunk in split_text(text, MESSAGE_LIMIT)[:5]:
                result = await hook.send(
                    text=escape(chunk), response_type="ephemeral", replace_original=False
                )
                if result.status_code != 200:
                    raise RuntimeError(
                        f"response_url refused the command reply: {result.status_code} "
                        f"{result.body[:200]!r}"
                    )

        return render

    async def react(self, inbound: Inbound) -> None:
        """Mark the person's message as seen; best effort (missing scope, deleted message)."""
        ts = str(inbound.meta.get("ts") or "")
        if not ts:
            return
        client = await self._outbound.workspaces.client_for(inbound.ref.tenant)
        try:
            await client.reactions_add(
                channel=str(inbound.meta.get("channel")), timestamp=ts, name=SEEN_REACTION
            )
        except SlackApiError as exc:
            if exc.response.get("error") != "already_reacted":
                log.info("Slack: could not add a reaction: %s", exc.response.get("error"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("Slack: could not add a reaction: %r", exc)


class _ThreadSink:
    """``MessageSink`` for one thread (or DM when ``thread`` is empty); messages are ts.

    The reply's buttons belong under its final message only. Once the stream
    has ended (``final``) every write carries them, which in the usual case
    puts them on the last message with no call of its own; ``finish`` then
    mends what that could not know (a final text that needed no write, or a
    last write that opened one more message).
    """

    def __init__(
        self,
        outbound: Outbound,
        channel: str,
        thread: str,
        team: str = "",
        actions: dict[str, Any] | None = None,
    ) -> None:
        self._outbound = outbound
        self._channel = channel
        self._thread = thread
        self._team = team
        self._actions = actions
        self.final = False
        self._texts: dict[str, str] = {}
        self._keyed: set[str] = set()

    def _now(self) -> dict[str, Any] | None:
        return self._actions if self.final else None

    async def post(self, text: str) -> str:
        actions = self._now()
        ts = await self._outbound.post_message(
            self._channel, self._thread, text, team=self._team, actions=actions
        )
        self._note(ts, text, actions)
        return ts

    async def update(self, message: str, text: str) -> None:
        actions = self._now()
        await self._outbound.update_message(
            self._channel, message, text, team=self._team, actions=actions
        )
        self._note(message, text, actions)

    def _note(self, ts: str, text: str, actions: dict[str, Any] | None) -> None:
        self._texts[ts] = text
        if actions is not None:
            self._keyed.add(ts)
        else:
            self._keyed.discard(ts)

    async def finish(self, messages: list[str]) -> None:
        """Leave the buttons under the last message alone."""
        if self._actions is None or not messages:
            return
        last = messages[-1]
        for ts in sorted(self._keyed - {last}):
            await self._outbound.paced_update(
                self._team, self._channel, ts, self._texts[ts], actions=None
            )
            self._keyed.discard(ts)
        if last not in self._keyed and last in self._texts:
            await self._outbound.paced_update(
                self._team, self._channel, last, self._texts[last], actions=self._actions
            )
            self._keyed.add(last)
