"""The console's Documents page in a real browser, against one ``deskmate run``.

Headless Chromium (Debian's ``chromium``, driven by Playwright) signs in as
the owner, as an admin of one tenant and as an agent. Documents are added by
upload and from a small website a local HTTP server serves; the site changes
and is synced; broken input (a PDF that is not one, a page answering 500)
shows its error for that document; a question is tried against the passages;
a document is removed. Every action must be in the audit trail.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from storage.db import Database
from storage.models import conversations
from storage.team_repo import TeamRepository
from tests.e2e.processes import spawn_deskmate, terminate, wait_healthy
from tests.e2e.test_console import TOKEN, Stack, _chromium, _shot, _signed_in_page
from tests.fakes.telegram_api import FakeTelegram
from tests.support import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

TENANT = "123456"  # the fake bot's id: the Telegram adapter's tenant
OTHER = "T0OTHER"
ADMIN = 4242  # an admin of TENANT only
AGENT = 5150  # an agent of TENANT: no Documents page

REFUNDS = """<!doctype html><html><head><title>Returns handbook</title></head><body>
<nav><a href="/">Home</a> · <a href="/contact">Contact</a></nav>
<h1 id="returns">Returns handbook</h1>
<h2 id="refund-time">How long a refund takes</h2>
<p>Once the parcel reaches our warehouse in Tilburg, the refund is paid back to the original
card within nine working days. Bank transfers may take two more days to show.</p>
<h2 id="return-label">Printing a return label</h2>
<p>Sign in, open the order and choose Print label; the label is free for orders over forty
euros and costs four euros otherwise.</p>
</body></html>"""

SITE_INDEX = """<!doctype html><html><head><title>Gardening club</title></head><body>
<h1 id="club">Gardening club</h1><p>See <a href="/watering.html">watering</a> and
<a href="/broken.html">the broken page</a>.</p>
<h2 id="meetings">Meetings</h2><p>The club meets every second Thursday in the orangery.</p>
</body></html>"""

WATERING = """<!doctype html><html><head><title>Watering</title></head><body>
<h1 id="watering">Watering</h1>
<h2 id="tomatoes">Tomatoes</h2><p>Water tomatoes {when}, at the roots, never on the leaves.</p>
</body></html>"""


class Site:
    """A small website on 127.0.0.1: two pages and one that answers 500."""

    def __init__(self) -> None:
        self.watering = "every morning"
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self.index)
        app.router.add_get("/watering.html", self.page)
        app.router.add_get("/broken.html", self.broken)
        app.router.add_get("/robots.txt", self.robots)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.base = f"http://127.0.0.1:{port}"

    async def index(self, _request: web.Request) -> web.Response:
        return web.Response(text=SITE_INDEX, content_type="text/html")

    async def page(self, _request: web.Request) -> web.Response:
        return web.Response(text=WATERING.format(when=self.watering), content_type="text/html")

    async def broken(self, _request: web.Request) -> web.Response:
        return web.Response(status=500, text="the server broke")

    async def robots(self, _request: web.Request) -> web.Response:
        return web.Response(text="User-agent: *\nAllow: /\n")

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def _seed(url: str) -> None:
    db = Database(url)
    await db.upgrade()
    # A customer wrote once: the console offers the tenant.
    await db.run(
        lambda conn: conn.execute(
            conversations.insert().values(
                platform="telegram", tenant=TENANT, chat="700", created_at=datetime.now(UTC)
            )
        )
    )
    team = TeamRepository(db)
    await team.set_role(TENANT, f"telegram:{ADMIN}", "admin", by="telegram:1")
    await team.set_role(TENANT, f"telegram:{AGENT}", "agent", by="telegram:1")
    await db.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    chromium = _chromium()
    from playwright.async_api import async_playwright

    tmp = tmp_path_factory.mktemp("documents")
    url = f"sqlite:///{tmp / 'deskmate.db'}"
    await _seed(url)
    fake = FakeTelegram()
    await fake.start()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SLACK_"))},
        "DATABASE_URL": url,
        "DESKMATE_DATA_DIR": str(tmp / "data"),
        "DESKMATE_MODEL": "fake",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "TELEGRAM_BOT_TOKEN": fake.token,
        "TELEGRAM_API_URL": fake.api_url,
        "DESKMATE_CONSOLE_TOKEN": TOKEN,
        "DESKMATE_USER_RATE": "0",
    }
    log = tmp / "deskmate.log"
    with log.open("w") as out:
        proc = await spawn_deskmate(env, out)
    base = f"http://127.0.0.1:{port}"
    playwright = await async_playwright().start()
    browser = await playwright.chromium.launch(executable_path=chromium)
    stack = Stack(base, fake, proc, env, browser, log)
    try:
        await wait_healthy(proc, base, stack.logs)
        yield stack
    finally:
        await browser.close()
        await playwright.stop()
        await terminate(proc)
        await fake.close()
        print(stack.logs())  # shown by pytest only when a test failed


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site() -> AsyncIterator[Site]:
    served = Site()
    await served.start()
    yield served
    await served.close()


async def _finish(page: Any, button: str, form: str) -> None:
    """Submit ``form`` with ``button`` and wait until its job has ended and the
    page has reloaded with its outcome."""
    async with page.expect_navigation(timeout=120_000):
        await page.locator(form).get_by_role("button", name=button).click()
    await page.wait_for_load_state()


async def _row(page: Any, text: str) -> str:
    row: str = await page.locator("#documents tbody tr", has_text=text).inner_text()
    return row


async def test_documents_are_added_synced_tried_and_removed(
    stack: Stack, site: Site, tmp_path: Path
) -> None:
    page = await _signed_in_page(stack)
    await page.goto(stack.base + "/console/documents")
    assert "No documents yet." in await page.locator("#documents").inner_text()

    # Upload: a help page, for customers of every tenant.
    handbook = tmp_path / "returns.html"
    handbook.write_text(REFUNDS, encoding="utf-8")
    await page.locator("#upload-file").set_input_files(str(handbook))
    await _finish(page, "Upload", "#upload-form")
    row = await _row(page, "Returns handbook")
    assert "uploaded" in row and "shared" in row and "customers" in row
    assert re.search(r"\b[1-9]\d*\b", row.split("customers", 1)[1]), row  # its chunks
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", row), row  # last sync

    # A file that is not what its name says is listed with its error; the rest goes on.
    broken = tmp_path / "manual.pdf"
    broken.write_bytes(b"this is plain text, not a PDF")
    await page.locator("#upload-file").set_input_files(str(broken))
    await _finish(page, "Upload", "#upload-form")
    assert (await _row(page, "manual.pdf")).count("\t") >= 6
    errors = (
        await page.locator("#documents tbody tr", has_text="manual.pdf")
        .locator(".error-text")
        .inner_text()
    )
    assert errors.strip(), "the broken PDF shows no error"

    # A website, crawled from its start page for one tenant's agents and customers.
    await page.locator("#url").fill(site.base + "/")
    await page.locator("#url-tenant").select_option(TENANT)
    await _finish(page, "Add", "#url-form")
    watering = await _row(page, "Watering")
    assert (
        TENANT in watering
        and site.base + "/watering.html" in await page.locator("#documents").inner_html()
    )
    jobs = await page.locator("#jobs").inner_text()
    assert "broken.html" in jobs and "500" in jobs, jobs  # the page that failed, and why
    await _shot(page, "documents-added")

    # Try a question in other words than the page's: the passage and its scores.
    await page.locator("#try-q").fill("when do I get my money back after sending something back?")
    await page.get_by_role("button", name="Try").click()
    await page.wait_for_load_state()
    passages = await page.locator("#passages tbody tr").first.inner_text()
    assert "Returns handbook" in passages and "How long a refund takes" in passages
    assert re.search(r"0\.\d{3}", passages)
    await _shot(page, "documents-tried")

    # The site changes; a sync re-reads the changed page only.
    site.watering = "every evening, after sunset"
    await page.locator("#sync-tenant").select_option("*")
    await _finish(page, "Sync now", "#sync-form")
    jobs = await page.locator("#jobs tbody tr").first.inner_text()
    assert "sync" in jobs and "updated" in jobs, jobs
    await page.goto(
        stack.base + "/console/documents?" + "q=when+should+I+water+my+tomatoes&as=" + TENANT
    )
    assert "after sunset" in await page.locator("#passages").inner_text()

    # Removing the upload takes its passages with it.
    await (
        page.locator("#documents tbody tr", has_text="Returns handbook")
        .get_by_role("button", name="Remove")
        .click()
    )
    await page.wait_for_load_state()
    assert "Removed Returns handbook" in await page.locator(".flash").inner_text()
    assert "Returns handbook" not in await page.locator("#documents").inner_text()
    await page.context.close()

    db = Database(stack.env["DATABASE_URL"])
    try:
        audit = await TeamRepository(db).audit_entries(limit=50)
    finally:
        await db.dispose()
    acted = {(e.action, e.target) for e in audit if e.action.startswith("docs.")}
    assert ("docs.add", "returns.html") in acted
    assert ("docs.add", site.base + "/") in acted
    assert ("docs.sync", "every tenant") in acted
    assert any(action == "docs.remove" for action, _ in acted)
    [added] = [e for e in audit if e.action == "docs.add" and e.target == "returns.html"]
    assert added.actor == "console:owner" and added.details["via"] == "console"


async def test_the_page_is_for_admins_of_their_own_tenants(stack: Stack, site: Site) -> None:
    # An agent's console is the tickets: the Documents page is closed to them.
    page = await _signed_in_page(stack, user=f"telegram:{AGENT}")
    response = await page.goto(stack.base + "/console/documents")
    assert response is not None and response.status == 403
    await page.context.close()

    # An admin of one tenant sees only that tenant's documents and adds only to it.
    page = await _signed_in_page(stack, user=f"telegram:{ADMIN}")
    await page.goto(stack.base + "/console/documents")
    listed = await page.locator("#documents").inner_text()
    assert "shared" not in listed.split("\n", 1)[1]
    assert await page.locator("#sync-tenant option[value='*']").count() == 0
    csrf = await page.locator("meta[name=csrf-token]").get_attribute("content")
    for tenant in (OTHER, ""):
        refused = await page.request.post(
            stack.base + "/console/api/documents/url",
            form={"url": site.base + "/", "tenant": tenant},
            headers={"X-CSRF-Token": csrf or ""},
        )
        assert refused.status == 403, tenant
    refused = await page.request.post(
        stack.base + "/console/api/documents/sync",
        form={"tenant": "*"},
        headers={"X-CSRF-Token": csrf or ""},
    )
    assert refused.status == 403
    await page.context.close()


async def test_every_documents_route_needs_sign_in_and_writes_csrf(stack: Stack) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(stack.base + "/console/documents", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/console/login")
        async with session.get(stack.base + "/console/api/documents/jobs/x") as r:
            assert r.status == 401
        for path in ("upload", "url", "sync"):
            async with session.post(stack.base + f"/console/api/documents/{path}") as r:
                assert r.status == 401, path
        async with session.post(stack.base + "/console/documents/1/remove") as r:
            assert r.status == 401
