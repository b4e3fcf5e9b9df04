from __future__ import annotations

import asyncio
import time

from adapters.telegram.pacing import ChatLimiter


async def _times(limiter: ChatLimiter, chat: int, n: int, start: float) -> list[float]:
    out = []
    for _ in range(n):
        await limiter.acquire(chat)
        out.append(time.monotonic() - start)
    return out


async def test_one_chat_is_spaced_and_chats_are_independent() -> None:
    limiter = ChatLimiter(per_chat_interval=0.1, global_rate=1000)
    start = time.monotonic()
    a, b = await asyncio.gather(_times(limiter, 1, 3, start), _times(limiter, 2, 3, start))
    for times in (a, b):
        assert times[1] - times[0] >= 0.09
        assert times[2] - times[1] >= 0.09
    # Two chats share the window instead of queueing behind each other.
    assert max(a[-1], b[-1]) < 0.3


async def test_penalty_delays_only_that_chat() -> None:
    limiter = ChatLimiter(per_chat_interval=0.0, global_rate=1000)
    limiter.penalize(1, 0.3)
    start = time.monotonic()
    other = asyncio.create_task(limiter.acquire(2))
    await other
    assert time.monotonic() - start < 0.1
    assert limiter.blocked_for(1) > 0.1
    await limiter.acquire(1)
    assert time.monotonic() - start >= 0.29


async def test_global_rate_caps_all_chats() -> None:
    limiter = ChatLimiter(per_chat_interval=0.0, global_rate=50)
    start = time.monotonic()
    await asyncio.gather(*(limiter.acquire(chat) for chat in range(11)))
    # 11 calls at 50/s need at least 10 gaps of 20 ms.
    assert time.monotonic() - start >= 0.19


async def test_unpaced_calls_skip_chat_spacing_but_not_penalties() -> None:
    limiter = ChatLimiter(per_chat_interval=10.0, global_rate=1000)
    await limiter.acquire(1)
    start = time.monotonic()
    await limiter.acquire(1, paced=False)
    assert time.monotonic() - start < 0.1
    limiter.penalize(1, 0.2)
    await limiter.acquire(1, paced=False)
    assert time.monotonic() - start >= 0.19


async def test_groups_get_the_slower_group_pace() -> None:
    limiter = ChatLimiter(per_chat_interval=0.05, group_interval=0.3, global_rate=1000)
    start = time.monotonic()
    await limiter.acquire(-100123)
    await limiter.acquire(-100123)
    assert time.monotonic() - start >= 0.29
    start = time.monotonic()
    await limiter.acquire(5)
    await limiter.acquire(5)
    assert time.monotonic() - start < 0.2


async def test_chat_spacing_holds_behind_a_long_global_queue() -> None:
    # 40 private chats queued first fill 0.4 s of the global budget; the group's
    # second call and the private chat's second call must still keep their spacing.
    limiter = ChatLimiter(per_chat_interval=0.1, group_interval=0.25, global_rate=100)
    start = time.monotonic()
    sent: dict[int, list[float]] = {}

    async def call(chat: int) -> None:
        await limiter.acquire(chat)
        sent.setdefault(chat, []).append(time.monotonic() - start)

    crowd = [call(chat) for chat in range(1000, 1040)]
    await asyncio.gather(*crowd, call(-100123), call(7), call(-100123), call(7))
    group, private = sent[-100123], sent[7]
    assert group[1] - group[0] >= 0.25 - 0.005
    assert private[1] - private[0] >= 0.1 - 0.005
    # The global rate still holds: 44 calls at 100/s need 43 gaps of 10 ms.
    assert max(max(times) for times in sent.values()) >= 0.43 - 0.005
