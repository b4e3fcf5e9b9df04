"""What the benchmarks share: the bot's core on the instant echo backend."""

from __future__ import annotations

from bot.app import create_manager
from bot.manager import ConversationManager
from llm.base import SamplingParams
from llm.fake import FakeBackend
from storage.db import Database
from storage.repository import Repository


async def echo_manager(
    database_url: str, backend: FakeBackend | None = None
) -> tuple[ConversationManager, Database]:
    """A migrated database and a manager whose model answers instantly (or
    as ``backend`` paces its words).

    The caller disposes of the database.
    """
    db = Database(database_url)
    await db.upgrade()
    manager = create_manager(
        repository=Repository(db),
        backend=backend or FakeBackend(),
        system_prompt="You are a benchmark.",
        sampling=SamplingParams(max_new_tokens=64),
        llm_timeout=30,
        max_input_chars=4000,
        history_messages=20,
    )
    return manager, db
