"""Flood control: a per-chat pace and one global pace for outgoing calls.

Telegram allows a bot roughly one message a second per chat, twenty a minute
per group, and thirty a second overall, and answers 429 with ``retry_after``
past that. Group and supergroup chat ids are negative, which is how the
group pace is chosen without asking Telegram. A 429 pauses
only the chat it names; other chats keep their own pace.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _ChatPace:
    next: float = float("-inf")  # the earliest a paced call to the chat may go out
    blocked_until: float = 0.0
    waiting: int = 0


class ChatLimiter:
    """Spaces calls ``per_chat_interval`` apart per private chat, ``group_interval``
    apart per group, and ``1/global_rate`` apart overall.

    A call takes its chat's slot and a global slot together, as one time at
    which both limits hold, and goes out at that time. Taking them one after
    the other would stamp the chat's slot at a time the call does not go out:
    behind a long global queue, two calls to one group would leave the queue
    back to back.
    """

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
        # Global slots taken, in order; a chat waiting on its own pace holds a
        # slot in the future, and calls to other chats fill the gaps before it.
        self._slots: list[float] = []

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
            if pace.next < now and pace.blocked_until < now and not pace.waiting:
                del self._chats[chat_id]

    def _interval(self, chat_id: int) -> float:
        return self.group_interval if chat_id < 0 else self.per_chat_interval

    def _take_global(self, ready: float, now: float) -> float:
        """The earliest time from ``ready`` at least one global interval away
        from every slot taken; takes it."""
        gap = self.global_interval
        del self._slots[: bisect.bisect_left(self._slots, now - gap)]
        slot = ready
        for taken in self._slots[bisect.bisect_left(self._slots, ready - gap) :]:
            if taken - gap >= slot:
                break
            slot = max(slot, taken + gap)
        bisect.insort(self._slots, slot)
        return slot

    def _give_back(self, slot: float) -> None:
        index = bisect.bisect_left(self._slots, slot)
        if index < len(self._slots) and self._slots[index] == slot:
            del self._slots[index]

    async def acquire(self, chat_id: int, *, paced: bool = True) -> None:
        """Wait until a call to ``chat_id`` may go out.

        ``paced=False`` (chat actions) skips the per-chat spacing but still
        respects a 429 pause and the global rate.
        """
        pace = self._pace(chat_id)
        pace.waiting += 1
        try:
            while True:
                now = self._clock()
                ready = max(now, pace.blocked_until)
                if paced:
                    ready = max(ready, pace.next)
                # Both slots are taken before any wait, so calls queued
                # meanwhile line up behind them.
                slot = self._take_global(ready, now)
                if paced:
                    pace.next = slot + self._interval(chat_id)
                if slot > now:
                    await asyncio.sleep(slot - now)
                if pace.blocked_until <= self._clock():
                    return
                # A 429 for this chat came in while waiting: wait it out too.
                self._give_back(slot)
        finally:
            pace.waiting -= 1

    def penalize(self, chat_id: int, seconds: float) -> None:
        """Telegram said 429 for this chat: hold its calls for ``seconds``."""
        pace = self._pace(chat_id)
        pace.blocked_until = max(pace.blocked_until, self._clock() + seconds)

    def blocked_for(self, chat_id: int) -> float:
        pace = self._chats.get(chat_id)
        return 0.0 if pace is None else max(0.0, pace.blocked_until - self._clock())
