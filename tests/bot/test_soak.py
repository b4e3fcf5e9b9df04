"""A short soak: many people, many conversations, concurrent answers, resets;
every per-conversation and per-person cache of a long-lived process stays
within its bound, and nothing is left held once the answers are done."""

from __future__ import annotations

import asyncio

from bot.routing import RateLimitRoute
from llm.fake import FakeBackend
from storage.repository import Repository
from tests.conftest import make_manager
from tests.support import Rendered, make_inbound

MEMORY = 8
CONVERSATIONS = 60
ROUNDS = 3


async def test_caches_stay_within_their_bounds_over_a_soak(
    sqlite_repository: Repository, backend: FakeBackend
) -> None:
    repository = Repository(sqlite_repository.db, cache_size=MEMORY)
    manager = make_manager(repository, backend, memory=MEMORY, user_rate=60)
    [limit] = [r for r in manager.router.routes if isinstance(r, RateLimitRoute)]
    most = {"versions": 0, "buckets": 0, "ids": 0, "users": 0, "slots": 0}

    def measure() -> None:
        sizes = {
            "versions": len(manager.turns.versions),
            "buckets": len(limit.buckets or ()),
            "ids": len(repository._conversation_ids),
            "users": len(repository._known_users),
            "slots": len(manager.turns._slots),
        }
        for name, size in sizes.items():
            most[name] = max(most[name], size)

    async def person(i: int, round_: int) -> str:
        text = "/reset" if (i + round_) % 7 == 0 else f"message {round_} from {i}"
        inbound = make_inbound(text, chat=f"chat{i}", user=f"user{i}")
        reply = await manager.handle(inbound, Rendered())
        measure()
        return reply.text

    for round_ in range(ROUNDS):
        # Ten conversations at a time, answered concurrently.
        for start in range(0, CONVERSATIONS, 10):
            replies = await asyncio.gather(*(person(i, round_) for i in range(start, start + 10)))
            assert all(replies), "every message got a reply"
    assert len(backend.requests) >= CONVERSATIONS * ROUNDS * 5 // 7

    assert most["versions"] <= MEMORY and most["buckets"] <= MEMORY
    assert most["ids"] <= MEMORY and most["users"] <= MEMORY
    # A conversation's slot lives only while one of its messages is in hand.
    assert most["slots"] <= 10 and manager.turns._slots == {}
    assert repository._held == {}, "no claim is kept once its answer is recorded"
    # Forgotten from memory is not forgotten: the first conversation's history is read back.
    await manager.handle(make_inbound("still there?", chat="chat1", user="user1"), Rendered())
    prompt = [m.content for m in backend.requests[-1].messages]
    assert f"message {ROUNDS - 1} from 1" in prompt
