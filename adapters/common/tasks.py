"""Supervision of the background tasks that answer accepted events.

An adapter acknowledges a delivery as soon as ``Conversations.accept`` stored
it and answers it in a task of its own. ``AnswerTasks`` keeps those tasks:
it starts them (at most ``limit`` answering at once, when a limit is set),
logs the ones that fail, replays what a previous run stored but never
answered, and at shutdown waits for the answers in hand up to a bound before
cancelling the rest. A cancelled answer stays stored as unanswered.

After the replay at start, a sweep keeps asking ``pending_of_tenant`` in the
background (every ``sweep_interval``, and soon after each answer ends):
events whose turn came (queued behind an answer another process gave),
failures due for a retry, and claims a stopped process stopped renewing are
answered here without waiting for a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        sweep_interval: float = 1.0,
        sweep_gap: float = 0.2,
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
        self.sweep_interval = sweep_interval
        # Sweeps triggered by answers ending run at most this often.
        self.sweep_gap = sweep_gap
        self._source: tuple[Conversations, str | None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()

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
        # The one place an answer's failure ends, whatever it is: logged, and
        # only this answer stops; the adapter and the other answers go on.
        except Exception:
            log.exception(
                "%s: answering %s failed", self.platform, accepted.inbound.event_id or "?"
            )
        finally:
            # The conversation's next message may be waiting for this one.
            self._kick.set()

    async def claim_pending(
        self, conversations: Conversations, *, tenant: str | None = None
    ) -> list[Accepted]:
        """What a previous run stored but never answered, claimed for answering.

        ``tenant`` keeps only that tenant's events (another bot's are left to it).
        The background sweep started by ``replay`` claims the same way.
        """
        self._source = (conversations, tenant)
        return await conversations.pending_of_tenant(self.platform, tenant)

    def replay(self, pending: Iterable[Accepted]) -> int:
        """Start answering each claimed event, and the background sweep after
        ``claim_pending``; returns how many."""
        count = 0
        for accepted in pending:
            self.spawn(accepted)
            count += 1
        if count:
            log.info("%s: answering %d stored but unanswered events", self.platform, count)
        if self._source is not None and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name=f"{self.platform}-sweep")
        return count

    async def _sweep(self) -> None:
        assert self._source is not None
        conversations, tenant = self._source
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.sweep_interval * 2**failures):
                    await self._kick.wait()
            self._kick.clear()
            try:
                found = await conversations.pending_of_tenant(self.platform, tenant)
            except asyncio.CancelledError:
                raise
            # Usually a StorageError; whatever it is, the sweep must outlive it
            # and try again (backing off), or unanswered events wait for a restart.
            except Exception as exc:
                if not failures:
                    log.warning("%s: sweep for unanswered events failed: %s", self.platform, exc)
                failures = min(failures + 1, 5)
                continue
            failures = 0
            for accepted in found:
                self.spawn(accepted)
            if found:
                log.info(
                    "%s: answering %d events picked up by the sweep", self.platform, len(found)
                )
            await asyncio.sleep(self.sweep_gap)

    async def stop_sweeping(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

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
        await self.stop_sweeping()
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
            "%s: %d answers cut off at shutdown; they will be answered again later",
            self.platform,
            len(late),
        )
        await asyncio.wait(late, timeout=self.cancel_timeout)
        return len(late)
