"""Flood control: a per-chat pace and one global pace for outgoing calls.

Telegram allows a bot roughly one message a second per chat, twenty a minute
per group, and thirty a second overall, and answers 429 with ``retry_after``
past that. Group and supergroup chat ids are negative, which is how the
group pace is chosen without asking Telegram. A 429 pauses
only the chat it names; other chats keep their own pace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _ChatPace:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last: float = float("-inf")
    blocked_until: float = 0.0


class ChatLimiter:
    """Spaces calls ``per_chat_interval`` apart per private chat, ``group_interval``
    apart per group, and ``1/global_rate`` apart overall."""

    def __init__(
        self,
        *,
        per_chat_interval: float = 1.0,
        group_interval: float | None = 3.0,
        global_rate: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        group = per_chat_interval if group_interval is None else group_interval
        if per_chat_interval < 0 or group < 0 or global_rate <= 0:
            raise ValueError("intervals must be >= 0 and global_rate > 0")
        self.per_chat_interval = per_chat_interval
        self.group_interval = group
        self.global_interval = 1.0 / global_rate
        self._clock = clock
        self._chats: dict[int, _ChatPace] = {}
        self._global_next = 0.0

    def _pace(self, chat_id: int) -> _ChatPace:
        pace = self._chats.get(chat_id)
        if pace is None:
            if len(self._chats) > 10_000:
                self._forget_idle()
            pace = self._chats[chat_id] = _ChatPace()
        return pace

    def _forget_idle(self) -> None:
        now = self._clock()
        for chat_id, pace in list(self._chats.items()):
            idle = now - pace.last > self._interval(chat_id) and pace.blocked_until < now
            if idle and not pace.lock.locked():
                del self._chats[chat_id]

    def _interval(self, chat_id: int) -> float:
        return self.group_interval if chat_id < 0 else self.per_chat_interval

    async def acquire(self, chat_id: int, *, paced: bool = True) -> None:
        """Wait until a call to ``chat_id`` may go out.

        ``paced=False`` (chat actions) skips the per-chat spacing but still
        respects a 429 pause and the global rate.
        """
        pace = self._pace(chat_id)
        async with pace.lock:
            while True:
                now = self._clock()
                ready = pace.blocked_until
                if paced:
                    ready = max(ready, pace.last + self._interval(chat_id))
                if ready <= now:
                    break
                await asyncio.sleep(ready - now)
            if paced:
                pace.last = now
        await self._acquire_global()

    async def _acquire_global(self) -> None:
        now = self._clock()
        slot = max(now, self._global_next)
        self._global_next = slot + self.global_interval
        if slot > now:
            await asyncio.sleep(slot - now)

    def penalize(self, chat_id: int, seconds: float) -> None:
        """Telegram said 429 for this chat: hold its calls for ``seconds``."""
        pace = self._pace(chat_id)
        pace.blocked_until = max(pace.blocked_until, self._clock() + seconds)

    def blocked_for(self, chat_id: int) -> float:
        pace = self._chats.get(chat_id)
        return 0.0 if pace is None else max(0.0, pace.blocked_until - self._clock())
