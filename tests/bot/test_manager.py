"""The conversation manager on the scripted backend and a real SQLite file."""

from __future__ import annotations

import asyncio
import typing

import pytest

from bot.manager import (
    EMPTY_MESSAGE,
    FAILED_MESSAGE,
    TIMEOUT_MESSAGE,
    ConversationManager,
)
from bot.plans import Plan
from bot.types import Reply, ReplyKind
from llm.base import LLMBusy, LLMError
from llm.fake import FakeBackend
from storage.repository import Repository
from tests.conftest import make_manager
from tests.support import Rendered, make_inbound


async def test_answer_streams_and_is_stored(
    manager: ConversationManager, backend: FakeBackend
) -> None:
    backend.enqueue("Our office opens at nine.")
    seen = Rendered()
    reply = await manager.handle(make_inbound("When do you open?"), seen)
    assert reply.kind is ReplyKind.ANSWER
    assert seen.replies == ["Our office opens at nine."]
    assert len(seen.chunks[0]) > 1, "the answer should arrive in several chunks"
    stats = await manager.repository.stats()
    assert stats.messages == 2
    assert stats.completion_tokens == 5


async def test_redelivered_event_is_answered_once(
    manager: ConversationManager, backend: FakeBackend
) -> None:
    seen = Rendered()
    first = await manager.handle(make_inbound("hello", event_id="upd-1"), seen)
    second = await manager.handle(make_inbound("hello", event_id="upd-1"), seen)
    assert first.kind is ReplyKind.ANSWER
    assert second.kind is ReplyKind.DUPLICATE
    assert not second.should_render
    assert len(seen.replies) == 1
    assert len(backend.requests) == 1


async def test_redelivery_during_generation_is_not_answered_twice(
    manager: ConversationManager, backend: FakeBackend
) -> None:
    backend.enqueue("slow answer here", chunk_delay=0.05)
    seen = Rendered()
    first = asyncio.create_task(manager.handle(make_inbound("hi", event_id="e1"), seen))
    await asyncio.sleep(0.02)
    dup = await manager.handle(make_inbound("hi", event_id="e1"), seen)
    await first
    assert dup.kind is ReplyKind.DUPLICATE
    assert seen.replies == ["slow answer here"]


async def test_one_conversation_in_order_others_concurrently(
    manager: ConversationManager, backend: FakeBackend
) -> None:
    order: list[str] = []
    backend.chunk_delay = 0.03

    def render_for(label: str) -> Rendered:
        class Tracking(Rendered):
            async def __call__(self, reply: Reply) -> None:
                order.append(f"start {label}")
                await super().__call__(reply)
                order.append(f"end {label}")

        return Tracking()

    await asyncio.gather(
        manager.handle(make_inbound("one two three", chat="A"), render_for("A1")),
        manager.handle(make_inbound("four five six", chat="A"), render_for("A2")),
        manager.handle(make_inbound("seven eight", chat="B"), render_for("B1")),
    )
    assert order.index("end A1") < order.index("start A2")
    # B did not wait for A's queue.
    assert order.index("start B1") < order.index("end A1")
    # A2's prompt saw A1's question and answer, never B's.
    a2 = next(r for r in backend.requests if r.messages[-1].content == "four five six")
    prompt = [m.content for m in a2.messages]
    assert "one two three" in prompt and "echo: one two three" in prompt
    assert all("seven" not in m for m in prompt)


async def test_history_trimmed_to_context_budget(sqlite_repository: Repository) -> None:
    small = FakeBackend(context_window=200)
    manager = make_manager(sqlite_repository, small)
    for i in range(12):
        await manager.handle(make_inbound(f"question number {i} " + "x" * 80), Rendered())
    last = small.requests[-1]
    assert last.messages[0].role == "system"
    assert last.messages[-1].content.startswith("question number 11")
    used = sum(small.count_tokens(m.content) + 6 for m in last.messages)
    assert used <= 200 - 64
    assert len(last.messages) < 24


async def test_llm_failure_tells_user_and_settles_the_event(
    manager: ConversationManager, backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    backend.enqueue(error=LLMError("CUDA out of memory"))
    seen = Rendered()
    reply = await manager.handle(make_inbound("hi", event_id="e1"), seen)
    assert reply.failed
    assert seen.replies == [FAILED_MESSAGE]
    assert "CUDA out of memory" in caplog.text
    # The customer was told to send it again: neither a redelivery nor the
    # sweep answers this one later (that would be a stale second answer).
    retry = await manager.handle(make_inbound("hi", event_id="e1"), seen)
    assert retry.kind is ReplyKind.DUPLICATE
    assert await manager.pending("test") == []
    assert seen.replies == [FAILED_MESSAGE]


async def test_llm_timeout(sqlite_repository: Repository) -> None:
    slow = FakeBackend()
    slow.enqueue("this will never finish in time", chunk_delay=0.5)
    manager = make_manager(sqlite_repository, slow, llm_timeout=0.2)
    seen = Rendered()
    reply = await manager.handle(make_inbound("hi"), seen)
    assert reply.failed
    assert seen.replies[0].endswith(TIMEOUT_MESSAGE)
    assert (await sqlite_repository.stats()).failed == 1


async def test_busy_backend_says_position(
    manager: ConversationManager, backend: FakeBackend
) -> None:
    backend.enqueue(error=LLMBusy("queue full", position=9))
    seen = Rendered()
    await manager.handle(make_inbound("hi"), seen)
    assert "number 9" in seen.replies[0]


async def test_render_failure_marks_event_failed(manager: ConversationManager) -> None:
    async def broken(reply: Reply) -> None:
        raise ConnectionError("platform down")

    with pytest.raises(ConnectionError):
        await manager.handle(make_inbound("hi"), broken)
    assert (await manager.repository.stats()).failed == 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t ",
        "\x00\x00",
        "\ud800 lone surrogate",
        "\u202eevil override\u202c",
        "a" * 50_000,
    ],
)
async def test_bad_input_is_stored_safely_and_answered(
    manager: ConversationManager, backend: FakeBackend, text: str
) -> None:
    seen = Rendered()
    reply = await manager.handle(make_inbound(text), seen)
    assert len(seen.replies) == 1 and seen.replies[0]
    if not text.strip(" \n\t\x00"):
        assert seen.replies[0] == EMPTY_MESSAGE
        assert backend.requests == []
    elif len(text) > 4000:
        assert "first 4,000 characters" in seen.replies[0]
        assert len(backend.requests[0].messages[-1].content) == 4000
    else:
        prompt = backend.requests[0].messages[-1].content
        assert "\x00" not in prompt and "\u202e" not in prompt
        prompt.encode("utf-8")
    assert reply.kind in (ReplyKind.ANSWER, ReplyKind.NOTICE)


async def test_commands(manager: ConversationManager, backend: FakeBackend) -> None:
    seen = Rendered()
    await manager.handle(make_inbound("/help"), seen)
    assert "/reset" in seen.replies[-1] and "/stats" not in seen.replies[-1]
    await manager.handle(make_inbound("/Help@deskmate_bot"), seen)
    assert "/reset" in seen.replies[-1]
    await manager.handle(make_inbound("/nope"), seen)
    assert "don't know the command /nope" in seen.replies[-1]
    await manager.handle(make_inbound("/stats"), seen)
    assert "only for this bot's admins" in seen.replies[-1]
    await manager.handle(make_inbound("/stats", user="admin"), seen)
    assert "conversations:" in seen.replies[-1]
    assert backend.requests == []


async def test_reset_forgets_history(manager: ConversationManager, backend: FakeBackend) -> None:
    # A word, not digits: the prompt may carry numbers of its own (a ticket, a canary).
    await manager.handle(make_inbound("remember the word pelargonium"), Rendered())
    await manager.handle(make_inbound("/reset"), Rendered())
    await manager.handle(make_inbound("what word?"), Rendered())
    prompt = [m.content for m in backend.requests[-1].messages]
    assert not any("pelargonium" in m for m in prompt)


async def test_reset_stops_answer_in_progress(
    manager: ConversationManager, backend: FakeBackend
) -> None:
    backend.enqueue(" ".join(f"w{i}" for i in range(200)), chunk_delay=0.01)
    seen = Rendered()
    answer = asyncio.create_task(manager.handle(make_inbound("tell me a long story"), seen))
    await asyncio.sleep(0.1)
    await asyncio.wait_for(manager.handle(make_inbound("/reset"), seen), timeout=2)
    await answer
    assert seen.replies[0].endswith("(stopped)")
    assert len(seen.replies[0].split()) < 100


async def test_forget_deletes_users_messages(manager: ConversationManager) -> None:
    await manager.handle(make_inbound("my address is 1 Main St", user="u1"), Rendered())
    seen = Rendered()
    await manager.handle(make_inbound("/forget", user="u1"), seen)
    # The question, its answer and the /forget command itself.
    assert "deleted 3 stored messages" in seen.replies[0]


async def test_pending_are_answered_after_restart(
    sqlite_repository: Repository, backend: FakeBackend
) -> None:
    crashed = make_manager(sqlite_repository, backend)
    await crashed.accept(make_inbound("stored then crashed", event_id="e1"))
    fresh = make_manager(Repository(sqlite_repository.db), backend)
    pending = await fresh.pending("test")
    assert [p.inbound.text for p in pending] == ["stored then crashed"]
    seen = Rendered()
    await fresh.process(pending[0], seen)
    assert seen.replies == ["echo: stored then crashed"]
    assert await fresh.pending("test") == []


def test_every_plan_type_has_an_executor(manager: ConversationManager) -> None:
    assert manager.executors.plan_types == set(typing.get_args(Plan))
