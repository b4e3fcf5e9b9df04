"""Samples of the model's queue and throughput, kept in memory for the overview.

The backend reports its queue and batch only as they are now, and ``/metrics``
counts tokens only as a running total; the overview wants a few minutes of
history, so a small task samples both every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bot.metrics import Metrics
from llm.scheduler import SchedulerStats

StatsSource = Callable[[], SchedulerStats | None]


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # time.time()
    waiting: int | None
    running: int | None
    tokens_per_second: float | None


class ModelSampler:
    def __init__(
        self,
        *,
        metrics: Metrics,
        stats: StatsSource | None,
        interval: float = 5.0,
        keep: int = 120,
    ) -> None:
        self.metrics = metrics
        self.stats = stats
        self.interval = interval
        self.samples: deque[Sample] = deque(maxlen=keep)
        self._last: tuple[float, float] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def reports_queue(self) -> bool:
        return self.stats is not None and self.stats() is not None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="console-sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def sample(self) -> Sample:
        now = time.time()
        stats = self.stats() if self.stats is not None else None
        # No completion tokens counted yet: the counter has no sample at all.
        total = (
            self.metrics.registry.get_sample_value("deskmate_tokens_total", {"kind": "completion"})
            or 0.0
        )
        rate: float | None = None
        if self._last is not None and now > self._last[0]:
            rate = max(0.0, (total - self._last[1]) / (now - self._last[0]))
        self._last = (now, total)
        sample = Sample(
            at=now,
            waiting=stats.waiting if stats is not None else None,
            running=stats.running if stats is not None else None,
            tokens_per_second=rate,
        )
        self.samples.append(sample)
        return sample

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)
