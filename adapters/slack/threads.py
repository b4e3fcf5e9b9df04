"""Which channel threads Deskmate takes part in, and with whom.

A thread joins when someone mentions Deskmate in it; later replies from
people who mentioned it continue the conversation without a new mention.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from slack_sdk.errors import SlackApiError

from adapters.slack.workspaces import Workspaces
from bot.types import Undeliverable

log = logging.getLogger(__name__)

# How long the ack path may spend asking Slack whether Deskmate is in a thread
# (Slack wants an ack within 3 s; we aim for 1 s).
THREAD_LOOKUP_TIMEOUT = 0.7


class ThreadMembers:
    """Which channel threads Deskmate is part of, and with whom.

    Kept in memory (bounded LRU); after a restart ``conversations.replies``
    rebuilds an unknown thread's entry on first use (``Threads``).
    """

    def __init__(self, *, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._threads: OrderedDict[tuple[str, str, str], set[str]] = OrderedDict()

    def join(self, team: str, channel: str, thread: str, user: str) -> None:
        key = (team, channel, thread)
        users = self._threads.setdefault(key, set())
        users.add(user)
        self._threads.move_to_end(key)
        while len(self._threads) > self.capacity:
            self._threads.popitem(last=False)

    def known(self, team: str, channel: str, thread: str) -> bool:
        return (team, channel, thread) in self._threads

    def remember(self, team: str, channel: str, thread: str, users: set[str]) -> None:
        """Record a thread's members as found in its history (empty: not ours)."""
        key = (team, channel, thread)
        self._threads[key] = set(users)
        self._threads.move_to_end(key)
        while len(self._threads) > self.capacity:
            self._threads.popitem(last=False)

    def includes(self, team: str, channel: str, thread: str, user: str) -> bool:
        users = self._threads.get((team, channel, thread))
        return users is not None and user in users


class Threads:
    """``ThreadMembers``, with a thread this process has not seen looked up in
    its history first."""

    def __init__(self, workspaces: Workspaces) -> None:
        self.members = ThreadMembers()
        self._workspaces = workspaces

    def join(self, team: str, channel: str, thread: str, user: str) -> None:
        self.members.join(team, channel, thread, user)

    async def includes(self, team: str, channel: str, thread: str, user: str) -> bool:
        """Is ``user`` talking with Deskmate in this thread?

        A lookup that times out raises ``TimeoutError``: the delivery fails
        and Slack sends it again.
        """
        if not self.members.known(team, channel, thread):
            await self._load(team, channel, thread)
        return self.members.includes(team, channel, thread, user)

    async def _load(self, team: str, channel: str, thread: str) -> None:
        """Rebuild a thread's members from its history (after a restart)."""
        bot_user_id, bot_id = await self._workspaces.identity(team)
        try:
            async with asyncio.timeout(THREAD_LOOKUP_TIMEOUT):
                client = await self._workspaces.client_for(team)
                response = await client.conversations_replies(channel=channel, ts=thread, limit=200)
        except (SlackApiError, Undeliverable) as exc:
            # Permanent (missing scope, thread gone): treat as a thread we are not in.
            error = exc.response.get("error") if isinstance(exc, SlackApiError) else exc
            log.info("Slack: conversations.replies failed: %s", error)
            self.members.remember(team, channel, thread, set())
            return
        # A timeout propagates: the delivery fails and Slack sends it again.
        messages = response.get("messages") or []
        mention = f"<@{bot_user_id}"
        bot_spoke = any(
            m.get("user") == bot_user_id or (bot_id and m.get("bot_id") == bot_id) for m in messages
        )
        users = (
            {str(m.get("user")) for m in messages if mention in (m.get("text") or "")}
            if bot_spoke and bot_user_id
            else set()
        )
        self.members.remember(team, channel, thread, users)
