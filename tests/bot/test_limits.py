"""Nobody floods the model, a hung model fails fast, and a long-lived
process does not grow with every conversation it ever saw."""

from __future__ import annotations

import asyncio

from bot.routing import RateLimitRoute
from bot.throttle import CircuitBreaker, PersonThrottle
from llm.fake import FakeBackend
from storage.repository import Repository
from tests.conftest import make_manager
from tests.support import Rendered, make_inbound


async def test_one_person_flooding_is_asked_once_to_wait_and_others_are_answered(
    sqlite_repository: Repository, backend: FakeBackend
) -> None:
    manager = make_manager(sqlite_repository, backend, user_rate=3)
    replies = [
        (await manager.handle(make_inbound(f"question {i}", user="flood"), Rendered())).text
        for i in range(6)
    ]
    assert replies[:3] == ["echo: question 0", "echo: question 1", "echo: question 2"]
    assert replies[3].startswith("You're sending messages faster than I can answer them")
    assert replies[4:] == ["", ""]  # told once; the rest is taken without a word
    assert len(backend.requests) == 3
    calm = await manager.handle(make_inbound("hello", user="calm", chat="c2"), Rendered())
    assert calm.text == "echo: hello"


async def test_a_flood_is_counted_as_it_arrives_not_as_a_slow_model_answers(
    repository: Repository,
) -> None:
    """Eight messages in a burst, at three a "minute": the model answers three,
    though each answer takes long enough for the bucket to refill."""
    slow = FakeBackend(chunk_delay=0.35)  # three words: over 1 s an answer
    manager = make_manager(repository, slow, user_rate=3)
    [limit] = [r for r in manager.router.routes if isinstance(r, RateLimitRoute)]
    assert limit.buckets is not None
    limit.buckets.per = 3.0  # a "minute" of 3 s: each answer refills more than a turn
    accepted = [await manager.accept(make_inbound(f"question {i}", user="flood")) for i in range(8)]
    replies = await asyncio.gather(*(manager.process(a, Rendered()) for a in accepted))
    texts = [reply.text for reply in replies]
    assert texts[:3] == ["echo: question 0", "echo: question 1", "echo: question 2"]
    assert texts[3].startswith("You're sending messages faster than I can answer them")
    assert texts[4:] == [""] * 4  # told once; the rest is taken without a word
    assert len(slow.requests) == 3
    # Once the spell is over, the next message is answered again.
    await asyncio.sleep(1.0)
    later = await manager.handle(make_inbound("question 8", user="flood"), Rendered())
    assert later.text == "echo: question 8"
    # Commands are not counted: they cost no model time.
    help_reply = await manager.handle(make_inbound("/help", user="flood"), Rendered())
    assert help_reply.text and "faster than" not in help_reply.text


async def test_a_hung_model_opens_the_circuit_and_customers_are_told_at_once(
    sqlite_repository: Repository,
) -> None:
    hung = FakeBackend()
    breaker = CircuitBreaker(failures=2, cooldown=0.3)
    manager = make_manager(sqlite_repository, hung, llm_timeout=0.2, breaker=breaker)
    for i in range(2):
        hung.enqueue("never finishes", chunk_delay=5.0)
        reply = await manager.handle(make_inbound(f"q{i}", chat=f"c{i}"), Rendered())
        assert reply.failed and "took too long" in reply.text
    fast = await manager.handle(make_inbound("q2", chat="c2"), Rendered())
    assert fast.failed and "couldn't answer that just now" in fast.text
    assert len(hung.requests) == 2  # the third customer never waited on the hung model
    await asyncio.sleep(0.35)
    hung.enqueue("back again")
    assert (await manager.handle(make_inbound("q3", chat="c3"), Rendered())).text == "back again"
    assert not breaker.open


def test_the_limit_is_what_was_counted_at_arrival_however_late_the_answer() -> None:
    throttle = PersonThrottle(rate=2, per=60.0)
    for inbound_id in range(1, 6):
        throttle.arrived(inbound_id, "p", now=0.0)
    throttle.arrived(6, "other", now=0.0)
    # Answered a minute later, when the bucket would be full again.
    assert throttle.verdict(1, "p", now=60.0) is None
    assert throttle.verdict(2, "p", now=60.0) is None
    assert throttle.verdict(3, "p", now=60.0) == 0.5  # told (the wait is over by now)
    assert throttle.verdict(4, "p", now=60.0) == 0.0  # same spell: nothing more said
    assert throttle.verdict(6, "other", now=60.0) is None
    # Counted once, however often the message is handed back.
    throttle.arrived(5, "p", now=61.0)
    assert throttle.verdict(5, "p", now=61.0) == 0.0
    # One accepted by another process is counted when it is answered.
    assert throttle.verdict(99, "p", now=61.0) is None


def test_the_breaker_reopens_when_its_probe_fails() -> None:
    breaker = CircuitBreaker(failures=1, cooldown=10)
    breaker.failed(now=0)
    assert not breaker.allow(now=5) and breaker.allow(now=10)
    assert not breaker.allow(now=10.1)  # one probe at a time
    breaker.failed(now=11)
    assert not breaker.allow(now=20) and breaker.allow(now=21.5)
    breaker.succeeded()
    assert breaker.allow(now=22) and not breaker.open


async def test_memory_stays_bounded_across_many_conversations(
    sqlite_repository: Repository, backend: FakeBackend
) -> None:
    repository = Repository(sqlite_repository.db, cache_size=5)
    manager = make_manager(repository, backend, memory=5, user_rate=1)
    for i in range(20):
        inbound = make_inbound(f"hi {i}", chat=f"chat{i}", user=f"user{i}")
        assert (await manager.handle(inbound, Rendered())).text == f"echo: hi {i}"
    assert len(manager.turns.versions) == 5
    [limit] = [r for r in manager.router.routes if isinstance(r, RateLimitRoute)]
    assert len(limit.buckets or ()) == 5
    assert len(repository._conversation_ids) == 5 and len(repository._known_users) == 5
    # A conversation forgotten from memory is still answered with its history.
    await manager.handle(make_inbound("and me?", chat="chat0", user="user0b"), Rendered())
    prompt = [m.content for m in backend.requests[-1].messages]
    assert "hi 0" in prompt and "echo: hi 0" in prompt


def test_the_people_told_to_wait_stay_within_memory_in_a_flood() -> None:
    throttle = PersonThrottle(rate=1, per=60.0, memory=8)
    for n in range(50):
        who = f"person-{n}"
        throttle.arrived(2 * n, who, now=0.0)
        throttle.arrived(2 * n + 1, who, now=0.0)
        assert throttle.verdict(2 * n, who, now=1.0) is None
        assert throttle.verdict(2 * n + 1, who, now=1.0)
    assert len(throttle._told_until) <= 8
