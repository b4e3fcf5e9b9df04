"""The console's widget sites: listed with their snippet, added, changed and
revoked behind the session and CSRF guards, each change audited."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
from bot.widget_sites import WidgetSites
from storage.console_repo import ConsoleRepository
from storage.handoff_repo import HandoffRepository
from storage.repository import ForgetResult, Repository
from storage.team_repo import TeamRepository
from storage.widget_repo import WidgetRepository

SIGNED_IN = {"Cookie": "deskmate_console=session-cookie"}


@pytest.fixture
async def console(sqlite_repository: Repository) -> AsyncIterator[tuple[str, WidgetSites, Team]]:
    db = sqlite_repository.db
    repo = ConsoleRepository(db)
    team = Team(TeamRepository(db))
    sites = WidgetSites(WidgetRepository(db), team=team)

    async def forget(platform_user: str) -> ForgetResult:
        return ForgetResult()

    services = ConsoleParts(
        repository=repo,
        knowledge=None,
        team=team,
        desk=HelpDesk(settings=HandoffSettings(), tickets=HandoffRepository(db)),
        metrics=Metrics(),
        backend_name="scripted",
        model_stats=None,
        forget=forget,
        sites=sites,
    )
    http = HttpServer(host="127.0.0.1", port=0)
    mount_console(http, settings=Settings(), services=services)
    await http.start()
    await repo.create_session(
        "session-cookie", csrf="csrf-token", via="token", valid_for=timedelta(hours=1)
    )
    yield f"http://127.0.0.1:{http.port}", sites, team
    await http.stop()


async def test_sites_are_added_changed_and_revoked_in_the_console(
    console: tuple[str, WidgetSites, Team],
) -> None:
    base, sites, team = console
    async with aiohttp.ClientSession() as client:

        async def post(path: str, form: dict[str, str]) -> str:
            async with client.post(base + path, data=form, headers=SIGNED_IN) as response:
                assert response.status == 200, await response.text()
                return await response.text()

        async with client.post(base + "/console/sites", data={"origins": "https://a.example"},
                               headers=SIGNED_IN) as response:  # fmt: skip
            assert response.status == 403  # no CSRF token
        assert await sites.sites() == []
        page = await post("/console/sites", {"csrf": "csrf-token", "origins": "shop.example"})
        assert "No site added" in page and "is not an origin" in page
        page = await post(
            "/console/sites",
            {"csrf": "csrf-token", "origins": "https://shop.example\nhttp://127.0.0.1:9000"},
        )
        [site] = await sites.sites()
        assert site.origins == ("https://shop.example", "http://127.0.0.1:9000")
        assert f'data-site="{site.key}"' in page.replace("&#34;", '"').replace("&quot;", '"')
        assert "/widget.js" in page
        assert site.secret in page

        edit = {
            "csrf": "csrf-token",
            "origins": "https://shop.example",
            "title": "Acme help",
            "color": "#0a7d5a",
            "greeting": "Hello!",
            "position": "left",
        }
        page = await post(f"/console/sites/{site.key}", edit)
        assert f"Saved site {site.key}." in page
        changed = await sites.site(site.key)
        assert changed is not None and changed.origins == ("https://shop.example",)
        assert (changed.look.title, changed.look.color, changed.look.position) == (
            "Acme help",
            "#0a7d5a",
            "left",
        )
        page = await post(f"/console/sites/{site.key}", {**edit, "color": "green"})
        assert "is unchanged" in page
        # Said in the reader's language, the refused setting's reason too.
        async with client.post(
            base + f"/console/sites/{site.key}",
            data={**edit, "color": "green"},
            headers={**SIGNED_IN, "Accept-Language": "de"},
        ) as response:
            german = await response.text()
        assert (
            f"Website {site.key} ist unverändert: green ist keine Farbe: schreibe sie als "
            "#rrggbb, z. B. #2f6fde"
        ) in german
        page = await post(f"/console/sites/{site.key}/remove", {"csrf": "csrf-token"})
        assert f"Revoked site {site.key}" in page
        assert await sites.sites() == []
    actions = [(e.action, e.actor) for e in await team.repository.audit_entries(newest_first=False)]
    assert [a for a, _ in actions] == ["widget_site.add", "widget_site.set", "widget_site.remove"]
