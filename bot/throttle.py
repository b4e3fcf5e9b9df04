"""Rate limits and a circuit breaker: one person (or one browser tab) cannot
fill the model's queue, and a hung model fails fast instead of making every
customer wait out the full timeout in turn."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass


class TokenBuckets:
    """At most ``rate`` events per ``per`` seconds for each key (a bucket that
    holds ``rate``); the longest-idle keys are forgotten beyond ``capacity``."""

    def __init__(self, *, rate: int, per: float = 60.0, capacity: int = 10_000) -> None:
        self.rate = rate
        self.per = per
        self.capacity = capacity
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """0 when ``key`` may go now, else the seconds until it may."""
        now = time.monotonic() if now is None else now
        tokens, stamp = self._buckets.pop(key, (float(self.rate), now))
        tokens = min(float(self.rate), tokens + (now - stamp) * self.rate / self.per)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) * self.per / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.capacity:
            self._buckets.popitem(last=False)  # idle the longest: full again anyway
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True, slots=True)
class _Arrival:
    wait: float  # 0: within the limit when it arrived
    at: float  # time.monotonic() at arrival


class PersonThrottle:
    """At most ``rate`` messages a person a ``per`` seconds, counted when the
    messages arrive and decided when each is answered.

    Counting at answer time would let a flood through: a conversation's
    messages are answered one after another, and while a slow model answers
    one the bucket refills for the next. So ``arrived`` takes a turn of the
    person's bucket as the message is stored, and ``verdict`` later reads what
    was found then. Kept in this process's memory: a message accepted by
    another process (or before a restart) is counted when it is answered.
    """

    def __init__(self, *, rate: int, per: float = 60.0, memory: int = 10_000) -> None:
        self.buckets = TokenBuckets(rate=rate, per=per, capacity=memory)
        self._memory = memory
        self._arrivals: OrderedDict[int, _Arrival] = OrderedDict()
        # Per person: until when the last "wait" they were told holds.
        self._told_until: dict[str, float] = {}

    def arrived(self, inbound_id: int, who: str, now: float | None = None) -> None:
        """Count the message ``inbound_id`` of ``who``, just stored."""
        now = time.monotonic() if now is None else now
        if inbound_id in self._arrivals:
            return  # counted once, however often it is handed back
        self._arrivals[inbound_id] = _Arrival(self.buckets.take(who, now), now)
        while len(self._arrivals) > self._memory:
            # Messages that never reached the limit (commands, relays) go first.
            self._arrivals.popitem(last=False)

    def verdict(self, inbound_id: int, who: str, now: float | None = None) -> float | None:
        """None when the message was within the limit; else the seconds the
        person should still wait (0.0: told already in this spell, so nothing
        more is said)."""
        now = time.monotonic() if now is None else now
        arrival = self._arrivals.pop(inbound_id, None)
        if arrival is None:
            arrival = _Arrival(self.buckets.take(who, now), now)
        if not arrival.wait:
            self._told_until.pop(who, None)
            return None
        if self._told_until.get(who, 0.0) > arrival.at:
            return 0.0
        self._told_until[who] = arrival.at + arrival.wait
        if len(self._told_until) > self._memory:
            # Spells that ended first; then, in a flood of more people than
            # remembered, the oldest (a dict keeps insertion order).
            live = {k: t for k, t in self._told_until.items() if t > now}
            while len(live) > self._memory:
                del live[next(iter(live))]
            self._told_until = live
        return max(arrival.at + arrival.wait - now, 0.5)


class CircuitBreaker:
    """Opens after ``failures`` model failures in a row; while open, requests
    fail at once. After ``cooldown`` seconds one request is let through: its
    success closes the circuit, its failure opens it for another cooldown."""

    def __init__(self, *, failures: int = 3, cooldown: float = 30.0) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self._streak = 0
        self._opened_at: float | None = None
        self._probing = False

    def allow(self, now: float | None = None) -> bool:
        if self._opened_at is None:
            return True
        now = time.monotonic() if now is None else now
        if self._probing or now - self._opened_at < self.cooldown:
            return False
        self._probing = True
        return True

    def succeeded(self) -> None:
        self._streak, self._opened_at, self._probing = 0, None, False

    def inconclusive(self) -> None:
        """The request let through told nothing (the queue was full): let another."""
        self._probing = False

    def failed(self, now: float | None = None) -> None:
        self._streak += 1
        if self._probing or self._streak >= self.failures:
            self._opened_at = time.monotonic() if now is None else now
        self._probing = False

    @property
    def open(self) -> bool:
        return self._opened_at is not None
