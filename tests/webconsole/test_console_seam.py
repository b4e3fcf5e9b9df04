"""The console in process on its services seam alone: no conversation manager,
an erasure that is recorded, and the session and CSRF guards in front of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
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
from storage.console_repo import ConsoleRepository
from storage.handoff_repo import HandoffRepository
from storage.repository import ForgetResult, Repository
from storage.team_repo import TeamRepository

COOKIE = "deskmate_console"


@dataclass
class Console:
    base: str
    repo: ConsoleRepository
    forgotten: list[str] = field(default_factory=list)

    async def sign_in(self) -> dict[str, str]:
        """A session made directly in storage; the headers that present it."""
        await self.repo.create_session(
            "session-cookie", csrf="csrf-token", via="token", valid_for=timedelta(hours=1)
        )
        return {"Cookie": f"{COOKIE}=session-cookie"}


@pytest.fixture
async def console(sqlite_repository: Repository) -> AsyncIterator[Console]:
    db = sqlite_repository.db
    found = Console(base="", repo=ConsoleRepository(db))

    async def forget(platform_user: str) -> ForgetResult:
        found.forgotten.append(platform_user)
        return ForgetResult(messages=3, events=1, faq_answers=2, escalations=1)

    services = ConsoleParts(
        repository=found.repo,
        knowledge=None,
        team=Team(TeamRepository(db)),
        desk=HelpDesk(settings=HandoffSettings(), tickets=HandoffRepository(db)),
        metrics=Metrics(),
        backend_name="scripted",
        model_stats=None,
        forget=forget,
    )
    http = HttpServer(host="127.0.0.1", port=0)
    mount_console(http, settings=Settings(), services=services)
    await http.start()
    found.base = f"http://127.0.0.1:{http.port}"
    yield found
    await http.stop()


async def test_pages_need_a_session_and_show_what_the_services_hold(console: Console) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(console.base + "/console", allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/console/login?next=%2Fconsole"
        async with client.get(console.base + "/console/api/overview") as response:
            assert response.status == 401
        signed_in = await console.sign_in()
        async with client.get(console.base + "/console/api/overview", headers=signed_in) as got:
            assert got.status == 200
            assert (await got.json())["model"]["backend"] == "scripted"
        for page in ("/console", "/console/tickets", "/console/knowledge/try?q=hello"):
            async with client.get(console.base + page, headers=signed_in) as response:
                assert response.status == 200, page


async def test_forgetting_a_person_goes_through_the_services_and_needs_csrf(
    console: Console,
) -> None:
    signed_in = await console.sign_in()
    form = {"user": "telegram:42", "confirm": "yes"}
    async with aiohttp.ClientSession() as client:
        url = console.base + "/console/users/forget"
        async with client.post(url, data=form, headers=signed_in) as response:
            assert response.status == 403
        assert console.forgotten == []
        async with client.post(
            url, data={**form, "csrf": "csrf-token"}, headers=signed_in, allow_redirects=False
        ) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/console/conversations"
        assert console.forgotten == ["telegram:42"]
        async with client.get(console.base + "/console/conversations", headers=signed_in) as got:
            assert got.status == 200
            assert (
                "Deleted everything stored about telegram:42: 3 messages, 2 logged answers, "
                "1 escalations." in await got.text()
            )
