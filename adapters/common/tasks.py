"""Supervision of the background tasks that answer accepted events.

An adapter acknowledges a delivery as soon as ``Conversations.accept`` stored
it and answers it in a task of its own. ``AnswerTasks`` keeps those tasks:
it starts them (at most ``limit`` answering at once, when a limit is set),
logs the ones that fail, replays what a previous run stored but never
answered, and at shutdown waits for the answers in hand up to a bound before
cancelling the rest. A cancelled answer stays stored as unanswered, so the
next start replays it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from bot.types import Accepted, Conversations

log = logging.getLogger(__name__)

Answer = Callable[[Accepted], Awaitable[None]]


class AnswerTasks:
    """The answer tasks of one adapter.

    ``answer`` renders one accepted event; an exception it raises is logged
    here (``CancelledError`` excepted) and ends only that answer.
    """

    def __init__(
        self,
        *,
        platform: str,
        answer: Answer,
        limit: int | None = None,
        drain_timeout: float = 20.0,
        cancel_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        self.platform = platform
        self.drain_timeout = drain_timeout
        self.cancel_timeout = cancel_timeout
        self._answer = answer
        self._clock = clock
        # Answers beyond the limit wait their turn, so a burst cannot starve
        # the adapter's own work (acknowledging deliveries in time).
        self._slots = asyncio.Semaphore(limit) if limit is not None else None
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, accepted: Accepted) -> asyncio.Task[None]:
        """Start answering ``accepted`` in the background."""
        task = asyncio.create_task(
            self._run(accepted), name=f"{self.platform}-answer-{accepted.inbound_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, accepted: Accepted) -> None:
        try:
            if self._slots is None:
                await self._answer(accepted)
            else:
                async with self._slots:
                    await self._answer(accepted)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "%s: answering %s failed", self.platform, accepted.inbound.event_id or "?"
            )

    async def claim_pending(
        self, conversations: Conversations, *, tenant: str | None = None
    ) -> list[Accepted]:
        """What a previous run stored but never answered, claimed for answering.

        ``tenant`` keeps only that tenant's events (another bot's are left to it).
        """
        pending = await conversations.pending(self.platform)
        if tenant is None:
            return pending
        return [p for p in pending if p.inbound.ref.tenant == tenant]

    def replay(self, pending: Iterable[Accepted]) -> int:
        """Start answering each claimed event; returns how many."""
        count = 0
        for accepted in pending:
            self.spawn(accepted)
            count += 1
        if count:
            log.info("%s: answering %d stored but unanswered events", self.platform, count)
        return count

    async def wait_idle(self) -> None:
        """Return once no answer is in progress (answers started meanwhile included)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def drain(self) -> int:
        """Let the answers in hand finish within ``drain_timeout``, then cancel the
        rest (waiting up to ``cancel_timeout`` for them to unwind).

        Answers started while draining are waited for too. Returns how many
        answers were cut off; they stay stored as unanswered.
        """
        if not self._tasks:
            return 0
        log.info("%s: finishing %d answers in hand", self.platform, len(self._tasks))
        deadline = self._clock() + self.drain_timeout
        while self._tasks:
            left = deadline - self._clock()
            if left <= 0:
                break
            await asyncio.wait(set(self._tasks), timeout=left)
        late = set(self._tasks)
        if not late:
            return 0
        for task in late:
            task.cancel()
        log.warning(
            "%s: %d answers cut off at shutdown; they will be answered at the next start",
            self.platform,
            len(late),
        )
        await asyncio.wait(late, timeout=self.cancel_timeout)
        return len(late)
