"""Erasing a person from the console: the bot's own erasure, recorded in the
audit trail (who, whom, how much) without a word of what was erased; on
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import aiohttp
import pytest

from adapters.web import HttpServer
from adapters.webconsole import mount_console
from bot.handoff.config import HandoffSettings
from bot.handoff.desk import HelpDesk
from bot.metrics import Metrics
from bot.services import ConsoleParts
from bot.settings import Settings
from bot.team.service import Team
from llm.fake import FakeBackend
from storage.console_repo import ConsoleRepository
from storage.handoff_repo import HandoffRepository
from storage.repository import Repository
from storage.team_repo import TeamRepository
from tests.conftest import make_manager
from tests.storage.support import make_event
from tests.storage.words import where_written

MARK = "NARWHAL-0419"
ADMIN = "test:dana"


@dataclass
class Console:
    base: str
    repo: ConsoleRepository

    async def sign_in(self) -> dict[str, str]:
        """A session of t1's admin, made directly in storage."""
        await TeamRepository(self.repo.db).set_role("t1", ADMIN, "admin", by="test:owner")
        await self.repo.create_session(
            "session-cookie",
            csrf="csrf-token",
            via="link",
            valid_for=timedelta(hours=1),
            platform_user=ADMIN,
        )
        return {"Cookie": "deskmate_console=session-cookie"}


@pytest.fixture
async def console(repository: Repository, backend: FakeBackend) -> AsyncIterator[Console]:
    db = repository.db
    team = Team(TeamRepository(db))
    manager = make_manager(repository, backend, team=team)
    services = ConsoleParts(
        repository=ConsoleRepository(db),
        knowledge=None,
        team=team,
        desk=HelpDesk(settings=HandoffSettings(), tickets=HandoffRepository(db)),
        metrics=Metrics(),
        backend_name="scripted",
        model_stats=None,
        forget=manager.forget_user,
    )
    http = HttpServer(host="127.0.0.1", port=0)
    mount_console(http, settings=Settings(), services=services)
    await http.start()
    yield Console(f"http://127.0.0.1:{http.port}", services.repository)
    await http.stop()


async def test_a_console_erasure_is_audited_without_the_erased_words(
    console: Console, repository: Repository
) -> None:
    asked = await repository.accept(make_event(f"my passport is {MARK}"), kind="chat")
    await repository.record_answer(asked, text="Noted.", kind="chat")
    form = {
        "user": "test:u1",
        "confirm": "yes",
        "csrf": "csrf-token",
        "back": f"/console/conversations/{asked.conversation_id}",
    }
    headers = await console.sign_in()
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            console.base + "/console/users/forget",
            data=form,
            headers=headers,
            allow_redirects=False,
        ) as response,
    ):
        assert response.status == 303
    [entry] = await TeamRepository(repository.db).audit_entries(tenant="t1", limit=1)
    assert (entry.tenant, entry.actor, entry.action, entry.target) == (
        "t1",
        ADMIN,
        "forget",
        "test:u1",
    )
    assert entry.details["messages"] == 2 and entry.details["via"] == "console"
    assert await where_written(repository.db, MARK) == []
