"""A console served on 127.0.0.1 over a test database, signed in with one
session cookie: the set-up the console's page tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from adapters.web import HttpServer
from adapters.webconsole import mount_console
from bot.handoff.config import HandoffSettings
from bot.handoff.desk import HelpDesk
from bot.knowledge.documents.library import DocumentLibrary
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.metrics import Metrics
from bot.services import ConsoleParts
from bot.settings import Settings
from bot.team.service import Team
from storage.console_repo import ConsoleRepository
from storage.db import Database
from storage.handoff_repo import HandoffRepository
from storage.repository import ForgetResult
from storage.team_repo import TeamRepository

SESSION = "deskmate_console=session-cookie"


async def _forget_nothing(platform_user: str) -> ForgetResult:
    return ForgetResult()


@asynccontextmanager
async def serving_console(
    db: Database,
    *,
    knowledge: KnowledgeBase | None = None,
    documents: DocumentLibrary | None = None,
    forget: Callable[[str], Awaitable[ForgetResult]] = _forget_nothing,
) -> AsyncIterator[str]:
    """The console's base URL; ``SESSION`` is a signed-in operator's cookie."""
    repo = ConsoleRepository(db)
    services = ConsoleParts(
        repository=repo,
        knowledge=knowledge,
        team=Team(TeamRepository(db)),
        desk=HelpDesk(settings=HandoffSettings(), tickets=HandoffRepository(db)),
        metrics=Metrics(),
        backend_name="scripted",
        model_stats=None,
        forget=forget,
        documents=documents,
    )
    http = HttpServer(host="127.0.0.1", port=0)
    mount_console(http, settings=Settings(), services=services)
    await http.start()
    await repo.create_session(
        "session-cookie", csrf="csrf-token", via="token", valid_for=timedelta(hours=1)
    )
    try:
        yield f"http://127.0.0.1:{http.port}"
    finally:
        await http.stop()
