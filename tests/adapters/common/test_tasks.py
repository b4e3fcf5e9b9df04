"""Supervision of answer tasks: failures, bounded concurrency, draining, replay."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import pytest

from adapters.common import AnswerTasks
from bot.types import Accepted, ConversationRef, Inbound, MenuEntry, Render, Reply, ReplyKind
from storage.repository import StoredInbound


def accepted(n: int, *, tenant: str = "bot1") -> Accepted:
    inbound = Inbound(
        ref=ConversationRef("chat", tenant, str(n)), user="u", text=f"q{n}", event_id=f"e{n}"
    )
    return Accepted(
        inbound=inbound,
        inbound_id=n,
        duplicate=False,
        stored=StoredInbound(inbound_id=n, conversation_id=n, message_id=None, status="new"),
        text=inbound.text,
        truncated=False,
        command=None,
    )


class Conversations:
    """Only ``pending_of_tenant`` matters here; it hands back what it holds once."""

    def __init__(self, pending: list[Accepted]) -> None:
        self._pending = pending
        self.asked: list[str] = []

    async def accept(self, inbound: Inbound) -> Accepted:
        raise NotImplementedError

    async def process(self, accepted: Accepted, render: Render) -> Reply:
        return Reply(ReplyKind.ANSWER, text="")

    async def pending_of_tenant(self, platform: str, tenant: str | None) -> list[Accepted]:
        self.asked.append(platform)
        found = [p for p in self._pending if tenant is None or p.inbound.ref.tenant == tenant]
        self._pending = [p for p in self._pending if p not in found]
        return found

    async def take_lease(self, name: str, *, purpose: str, wait: float | None = None) -> None:
        """Always granted: no test here runs a second consumer."""

    async def set_active(self, ref: ConversationRef, active: bool) -> None: ...

    async def move_conversation(self, old: ConversationRef, new: ConversationRef) -> None: ...

    def menu(self, language: str | None = None) -> Sequence[MenuEntry]:
        return []

    def listens_to(self, ref: ConversationRef) -> bool:
        return False

    async def staff_language(self, ref: ConversationRef) -> str:
        return "en"


async def test_a_failed_answer_is_logged_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done: list[int] = []

    async def answer(a: Accepted) -> None:
        if a.inbound_id == 2:
            raise RuntimeError("boom")
        await asyncio.sleep(0.01)
        done.append(a.inbound_id)

    tasks = AnswerTasks(platform="chat", answer=answer)
    with caplog.at_level(logging.ERROR):
        for n in (1, 2, 3):
            tasks.spawn(accepted(n))
        await tasks.wait_idle()
    assert sorted(done) == [1, 3]
    assert "chat: answering e2 failed" in caplog.text
    assert "boom" in caplog.text
    assert len(tasks) == 0


async def test_limit_bounds_how_many_answer_at_once() -> None:
    running = peak = 0

    async def answer(a: Accepted) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    tasks = AnswerTasks(platform="chat", answer=answer, limit=3)
    for n in range(10):
        tasks.spawn(accepted(n))
    await tasks.wait_idle()
    assert peak == 3


async def test_drain_waits_for_answers_in_hand_within_its_bound() -> None:
    finished: list[int] = []
    cancelled: list[int] = []

    async def answer(a: Accepted) -> None:
        try:
            await asyncio.sleep(0.05 if a.inbound_id == 1 else 60)
            finished.append(a.inbound_id)
        except asyncio.CancelledError:
            cancelled.append(a.inbound_id)
            raise

    tasks = AnswerTasks(platform="chat", answer=answer, drain_timeout=0.3, cancel_timeout=1)
    tasks.spawn(accepted(1))
    tasks.spawn(accepted(2))
    started = time.monotonic()
    cut_off = await tasks.drain()
    elapsed = time.monotonic() - started
    assert cut_off == 1
    assert finished == [1] and cancelled == [2]
    assert 0.28 <= elapsed < 1.0
    assert len(tasks) == 0


async def test_drain_includes_answers_started_while_draining() -> None:
    finished: list[int] = []
    tasks: AnswerTasks

    async def answer(a: Accepted) -> None:
        await asyncio.sleep(0.05)
        if a.inbound_id == 1:
            tasks.spawn(accepted(2))  # e.g. a webhook call that was already in flight
        finished.append(a.inbound_id)

    tasks = AnswerTasks(platform="chat", answer=answer, drain_timeout=5)
    tasks.spawn(accepted(1))
    assert await tasks.drain() == 0
    assert finished == [1, 2]


async def test_drain_with_nothing_in_hand_returns_at_once() -> None:
    async def answer(a: Accepted) -> None: ...

    assert await AnswerTasks(platform="chat", answer=answer).drain() == 0


async def test_replay_answers_what_the_last_run_left_of_this_tenant(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answered: list[int] = []

    async def answer(a: Accepted) -> None:
        answered.append(a.inbound_id)

    conversations = Conversations([accepted(1), accepted(2, tenant="bot2"), accepted(3)])
    tasks = AnswerTasks(platform="chat", answer=answer)
    pending = await tasks.claim_pending(conversations, tenant="bot1")
    assert conversations.asked == ["chat"]
    assert [p.inbound_id for p in pending] == [1, 3]
    with caplog.at_level(logging.INFO):
        assert tasks.replay(pending) == 2
    await tasks.wait_idle()
    assert sorted(answered) == [1, 3]
    assert "answering 2 stored but unanswered events" in caplog.text


async def test_claim_without_tenant_keeps_every_event() -> None:
    async def answer(a: Accepted) -> None: ...

    conversations = Conversations([accepted(1), accepted(2, tenant="bot2")])
    tasks = AnswerTasks(platform="chat", answer=answer)
    assert len(await tasks.claim_pending(conversations)) == 2
    assert tasks.replay([]) == 0


def test_limit_must_be_positive() -> None:
    async def answer(a: Accepted) -> None: ...

    with pytest.raises(ValueError):
        AnswerTasks(platform="chat", answer=answer, limit=0)
