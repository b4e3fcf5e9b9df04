"""/reset in a group removes only its sender's draft; the converters say
which conversations are groups."""

from __future__ import annotations

from pathlib import Path

from adapters.slack.convert import command_to_inbound, event_to_inbound
from adapters.telegram.convert import BotIdentity, update_to_inbound
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.policy import Policy
from bot.manager import ConversationManager
from bot.types import ConversationRef, Inbound
from llm.embeddings import HashingEmbedder
from llm.fake import FakeBackend
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository
from tests.conftest import make_manager
from tests.fakes.slack_api import message_event
from tests.fakes.telegram_api import build_message_update
from tests.support import Rendered

_ids = iter(range(1, 10_000))


def in_group(text: str, user: str) -> Inbound:
    return Inbound(
        ref=ConversationRef("test", "t1", "group-1", ""),
        user=user,
        text=text,
        event_id=f"g{next(_ids)}",
        user_name=user,
        meta={"group": True},
    )


async def say_in_group(manager: ConversationManager, text: str, user: str) -> str:
    return (await manager.handle(in_group(text, user), Rendered())).text


async def test_a_customers_reset_in_a_group_keeps_an_agents_draft(
    sqlite_repository: Repository, backend: FakeBackend, tmp_path: Path
) -> None:
    kb = KnowledgeBase(
        repository=KnowledgeRepository(sqlite_repository.db),
        embedder=HashingEmbedder(),
        background=(),
        policy=Policy(verbatim_score=0.5, grounded_score=0.25, fallback_verbatim_score=0.35),
        refresh_interval=0.0,
    )
    manager = make_manager(sqlite_repository, backend, knowledge=kb)
    key = in_group("", "x").ref.key
    backend.enqueue("Subject: Maintenance\n\nWe will be down on Sunday.")
    drafted = await say_in_group(manager, "/draft email maintenance on Sunday", "admin")
    assert drafted.startswith("DRAFT")
    assert await kb.open_draft(key) is not None

    reset = await say_in_group(manager, "/reset", "u2")
    assert await kb.open_draft(key) is not None
    assert "your part of this group's conversation" in reset
    # Still the agent's to revise.
    backend.enqueue("Subject: Maintenance\n\nDown Sunday.")
    assert "Down Sunday." in await say_in_group(manager, "shorter", "admin")

    # The author's own /reset (an owner's: the whole group) closes it.
    assert "forgotten this conversation" in await say_in_group(manager, "/reset", "admin")
    assert await kb.open_draft(key) is None


ME = BotIdentity(id=123456, username="deskmate_bot")


def test_telegram_groups_are_marked() -> None:
    def converted(chat_id: int, chat_type: str) -> Inbound:
        update = build_message_update(
            update_id=1,
            message_id=1,
            chat_id=chat_id,
            text="/reset",
            user_id=7,
            first_name="Ann",
            chat_type=chat_type,
            bot_username=ME.username,
        )
        inbound = update_to_inbound(update, me=ME)
        assert inbound is not None
        return inbound

    assert not converted(7, "private").in_group
    assert converted(-5001, "group").in_group
    assert converted(-1005001, "supergroup").in_group


def test_slack_channels_are_groups_and_dms_are_not() -> None:
    dm = event_to_inbound(message_event("hi", channel="D1", channel_type="im"))
    thread = event_to_inbound(
        message_event("hi", channel="C1", channel_type="channel", thread_ts="1.1")
    )
    assert not dm.in_group and thread.in_group
    base = {"team_id": "T1", "user_id": "U2", "trigger_id": "1.2.3", "text": "reset"}
    assert not command_to_inbound({**base, "channel_id": "D1"}).in_group
    assert not command_to_inbound(
        {**base, "channel_id": "G1", "channel_name": "directmessage"}
    ).in_group
    assert command_to_inbound({**base, "channel_id": "C1", "channel_name": "general"}).in_group
