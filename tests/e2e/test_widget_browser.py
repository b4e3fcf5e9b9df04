"""The website widget in headless Chromium, against a real ``deskmate run``.

A shop's page on another port embeds the snippet under a strict
Content-Security-Policy; a visitor asks, gets a streamed answer, reloads,
talks to a person, and the agent's answer from the fake Telegram group or the
fake Slack channel appears in the panel once. A page on an origin the site
does not list gets no widget, and its API calls are refused. Screenshots go
to ``test-artifacts/widget/`` (``DESKMATE_TEST_ARTIFACTS`` moves it).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.slack.convert import unescape
from bot.widget_sites import user_hash
from tests.e2e.processes import ROOT
from tests.e2e.test_handoff_telegram import (
    AGENT,
    GROUP,
    SIGNATURE,
    Deskmate,
    ticket_message,
)
from tests.fakes.slack_api import FakeSlack, deliver, message_event
from tests.fakes.telegram_api import FakeTelegram
from tests.llm.fake_openai import FakeOpenAI
from tests.support import free_port

ARTIFACTS = Path(os.environ.get("DESKMATE_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "widget"
SLACK_SECRET = "widget-signing-secret"
SPACE = "CSUP"
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
</head><body><h1>{title}</h1><p>Products, prices and parcels.</p>
<script src="{deskmate}/widget.js" data-site="{site}"{signed} async></script></body></html>"""


def _chromium() -> str:
    pytest.importorskip("playwright.async_api")
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not shutil.which(path):
        pytest.skip("no Chromium to run the page in")
    return path


class HostPage:
    """A website on its own port serving one page under a strict CSP that
    allows Deskmate's origin for scripts and requests, and nothing inline."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.deskmate = ""
        self.site = ""
        self.secret = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> HostPage:
        app = web.Application()
        app.router.add_get("/", self._page)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _page(self, request: web.Request) -> web.Response:
        # A signed-in user's page: the id and its HMAC, as the site's own server writes them.
        user = request.query.get("user", "")
        signed = ""
        if user:
            given = user_hash(self.secret, user)
            if request.query.get("forged"):
                given = user_hash("not the secret", user)
            signed = f' data-user="{user}" data-user-hash="{given}"'
        html = PAGE.format(title=self.title, deskmate=self.deskmate, site=self.site, signed=signed)
        response = web.Response(text=html, content_type="text/html")
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src {self.deskmate}; connect-src {self.deskmate}; "
            "base-uri 'none'; form-action 'none'"
        )
        return response


async def widget_cli(env: dict[str, str], *args: str) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "widget", *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode(), err.decode()


def closed_hours() -> str:
    """Business hours that are certainly not now: an hour starting in two."""
    start = datetime.now(UTC) + timedelta(hours=2)
    end = start + timedelta(hours=1)
    if end.date() != start.date():
        start, end = start - timedelta(hours=4), end - timedelta(hours=4)
    return f"Mon-Sun {start:%H:00}-{end:%H:00} UTC"


@pytest.fixture
async def shop() -> AsyncIterator[HostPage]:
    page = await HostPage("Acme Shop").start()
    yield page
    await page.stop()


@pytest.fixture
async def elsewhere() -> AsyncIterator[HostPage]:
    page = await HostPage("Somebody else's page").start()
    yield page
    await page.stop()


@pytest.fixture
async def model() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


async def deskmate_for(tmp_path: Path, shop: HostPage, env: dict[str, str]) -> tuple[Deskmate, str]:
    """A ``deskmate run`` with a site for ``shop`` (added and styled by the
    CLI before it starts), the local web chat off."""
    deskmate = Deskmate(
        tmp_path,
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'deskmate.db'}",
            "DESKMATE_WEB_CHAT": "off",
            **env,
        },
    )
    out, err = await widget_cli(deskmate.env, "add", shop.origin, "--json")
    added = json.loads(out)
    shop.secret = err.rsplit(": ", 1)[1].strip()
    assert added["origins"] == [shop.origin] and added["tenant"] == "local"
    await widget_cli(
        deskmate.env, "set", added["site"], "--title", "Acme help", "--color", "#0a7d5a",
        "--greeting", "Hello! Ask us anything about your order.",
    )  # fmt: skip
    shop.deskmate = deskmate.base
    shop.site = added["site"]
    await deskmate.start()
    return deskmate, added["site"]


async def in_browser(scenario: Callable[[Any], Awaitable[None]]) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=_chromium(), headless=True)
        try:
            context = await browser.new_context(
                viewport={"width": 900, "height": 700}, locale="en-GB"
            )
            page = await context.new_page()
            failures: list[str] = []
            page.on("console", lambda m: failures.append(m.text) if m.type == "error" else None)
            await scenario(page)
            # A strict CSP that blocked the widget's styles would say so here.
            assert not [f for f in failures if "Content Security Policy" in f], failures
        finally:
            await browser.close()


async def ask_and_reload(page: Any, shop: HostPage) -> None:
    """Open the panel, ask, see the streamed answer; reload and find it all again."""
    await page.goto(shop.origin + "/")
    launcher = page.get_by_role("button", name="Open chat")
    await launcher.wait_for(timeout=15_000)
    # The site's colour reached the shadow root's stylesheet under the page's strict CSP.
    colour = await launcher.evaluate("b => getComputedStyle(b).backgroundColor")
    assert colour == "rgb(10, 125, 90)"
    # The keyboard opens it, and focus lands in the message box.
    await launcher.focus()
    await page.keyboard.press("Enter")
    box = page.get_by_role("textbox", name="Your message")
    await box.wait_for()
    assert await box.evaluate("b => b.getRootNode().activeElement === b")
    log = page.get_by_role("log")
    await log.get_by_text("Hello! Ask us anything about your order.").wait_for()
    await page.keyboard.type("where is my parcel?")
    await page.keyboard.press("Enter")
    await log.get_by_text("echo: where is my parcel?").wait_for(timeout=20_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "answer.png"))
    visitor = await page.evaluate("Object.keys(localStorage).filter(k => k.endsWith(':visitor'))")
    assert len(visitor) == 1

    await page.reload()
    log = page.get_by_role("log")
    await log.get_by_text("echo: where is my parcel?").wait_for(timeout=15_000)
    assert await log.get_by_text("where is my parcel?", exact=True).count() == 1
    again = await page.evaluate("Object.keys(localStorage).filter(k => k.endsWith(':visitor'))")
    assert again == visitor
    # Escape closes the panel and gives focus back to the launcher.
    await page.get_by_role("textbox", name="Your message").focus()
    await page.keyboard.press("Escape")
    launcher = page.get_by_role("button", name="Open chat")
    assert await launcher.evaluate("b => b.getRootNode().activeElement === b")
    await launcher.click()


async def agent_reply_shows_once(page: Any, relayed: str) -> None:
    log = page.get_by_role("log")
    await log.get_by_text(relayed).wait_for(timeout=30_000)
    await asyncio.sleep(4)  # a poll or two more: anything twice would be here by now
    assert await log.get_by_text(relayed).count() == 1
    await page.reload()
    log = page.get_by_role("log")
    await log.get_by_text(relayed).wait_for(timeout=15_000)
    await asyncio.sleep(4)
    assert await log.get_by_text(relayed).count() == 1


async def test_a_visitor_talks_to_a_telegram_agent_through_the_widget(
    tmp_path: Path, fake: FakeTelegram, model: FakeOpenAI, shop: HostPage, elsewhere: HostPage
) -> None:
    deskmate, site = await deskmate_for(
        tmp_path,
        shop,
        {
            "DESKMATE_LLM_URL": model.url,
            "TELEGRAM_BOT_TOKEN": fake.token,
            "TELEGRAM_API_URL": fake.api_url,
            "DESKMATE_HANDOFF_CHAT": f"telegram:{GROUP}",
            "DESKMATE_BUSINESS_HOURS": closed_hours(),
        },
    )
    elsewhere.deskmate, elsewhere.site = deskmate.base, site
    try:

        async def scenario(page: Any) -> None:
            await ask_and_reload(page, shop)
            await page.get_by_role("button", name="Talk to a person").click()
            await fake.wait_for(lambda: bool(fake.texts(GROUP)), within=20, what="the ticket")
            ticket = ticket_message(fake, GROUP)
            assert "where is my parcel?" in ticket.text
            # Outside the team's hours the visitor leaves an address, and the ticket shows it.
            email = page.get_by_role("textbox", name="Your email address")
            await email.fill("ana@example.com")
            await page.keyboard.press("Enter")
            await fake.wait_for(
                lambda: any("ana@example.com" in t for t in fake.texts(GROUP)),
                within=20,
                what="the email address in the ticket",
            )
            fake.send_user_message(
                GROUP, "It left the depot today", reply_to=fake.message_json(ticket), **AGENT
            )
            await agent_reply_shows_once(page, f"{SIGNATURE}: It left the depot today")
            await page.screenshot(path=str(ARTIFACTS / "agent-reply.png"))
            await page.get_by_role("dialog").screenshot(path=str(ARTIFACTS / "panel.png"))

            await page.goto(elsewhere.origin + "/")
            await asyncio.sleep(3)
            assert await page.get_by_role("button", name="Open chat").count() == 0
            assert await page.locator("[data-deskmate-widget]").count() == 0
            refused = await page.evaluate(
                "url => fetch(url).then(r => 'read ' + r.status, e => 'refused')",
                f"{deskmate.base}/widget/api/config?site={site}",
            )
            assert refused == "refused"
            await page.screenshot(path=str(ARTIFACTS / "not-listed.png"))

        await in_browser(scenario)
        async with aiohttp.ClientSession() as session:
            url = f"{deskmate.base}/widget/api/chat?site={site}"
            headers = {"Origin": elsewhere.origin}
            async with session.post(url, json={"text": "hi"}, headers=headers) as response:
                assert response.status == 403
                assert "Access-Control-Allow-Origin" not in response.headers
        assert await deskmate.stop() == 0
    finally:
        if deskmate.proc is not None and deskmate.proc.returncode is None:
            deskmate.proc.kill()
        print(deskmate.logs())


async def test_a_visitor_talks_to_a_slack_agent_through_the_widget(
    tmp_path: Path, model: FakeOpenAI, shop: HostPage
) -> None:
    slack = await FakeSlack().start()
    deskmate, _ = await deskmate_for(
        tmp_path,
        shop,
        {
            "DESKMATE_LLM_URL": model.url,
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_SIGNING_SECRET": SLACK_SECRET,
            "SLACK_API_URL": slack.api_url,
            "SLACK_EDIT_INTERVAL": "0.1",
            "DESKMATE_HANDOFF_CHAT": f"slack:T1/{SPACE}",
        },
    )
    try:

        async def scenario(page: Any) -> None:
            await ask_and_reload(page, shop)
            await page.get_by_role("button", name="Talk to a person").click()
            await slack.wait_for(lambda: len(slack.bot_messages(SPACE, "")) == 1, within=30)
            [ticket] = slack.bot_messages(SPACE, "")
            assert "widget" in unescape(ticket.text)
            answer = message_event(
                "Your parcel left the depot this morning.",
                channel=SPACE,
                channel_type="channel",
                thread_ts=ticket.ts,
                user="UAGENT",
            )
            async with aiohttp.ClientSession() as session:
                url = deskmate.base + "/slack/events"
                assert await deliver(session, url, SLACK_SECRET, answer) == 200
                # Slack delivers it again; the visitor still sees it once.
                assert await deliver(session, url, SLACK_SECRET, answer, retry=1) == 200
            relayed = f"{SIGNATURE}: Your parcel left the depot this morning."
            await agent_reply_shows_once(page, relayed)
            await page.screenshot(path=str(ARTIFACTS / "slack-agent-reply.png"))

        await in_browser(scenario)
        assert await deskmate.stop() == 0
    finally:
        if deskmate.proc is not None and deskmate.proc.returncode is None:
            deskmate.proc.kill()
        print(deskmate.logs())
        await slack.stop()


async def test_a_signed_in_users_conversation_follows_them_to_another_device(
    tmp_path: Path, model: FakeOpenAI, shop: HostPage
) -> None:
    deskmate, _ = await deskmate_for(
        tmp_path,
        shop,
        {"DESKMATE_LLM_URL": model.url, "DESKMATE_WEB_CHAT": "on", "DESKMATE_ASK_RATING": "all"},
    )
    try:
        from playwright.async_api import async_playwright

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=_chromium(), headless=True)
            try:
                laptop = await (await browser.new_context()).new_page()
                await laptop.goto(shop.origin + "/?user=customer-42")
                await laptop.get_by_role("button", name="Open chat").click()
                await laptop.get_by_role("textbox", name="Your message").fill("order 77?")
                await laptop.keyboard.press("Enter")
                await (
                    laptop.get_by_role("log")
                    .get_by_text("echo: order 77?")
                    .wait_for(timeout=20_000)
                )
                # The rating under the answer is a pair of real buttons, pressed by keyboard.
                thumbs_up = laptop.get_by_role("button", name="👍")
                await thumbs_up.focus()
                await laptop.keyboard.press("Enter")
                await (
                    laptop.get_by_role("log")
                    .get_by_text("Thanks for the feedback!")
                    .wait_for(timeout=15_000)
                )
                assert await thumbs_up.is_disabled()
                # Another browser, nothing kept: the same person, the same conversation.
                phone = await (await browser.new_context()).new_page()
                await phone.goto(shop.origin + "/?user=customer-42")
                await phone.get_by_role("button", name="Open chat").click()
                log = phone.get_by_role("log")
                await log.get_by_text("echo: order 77?").wait_for(timeout=15_000)
                await log.get_by_text("order 77?", exact=True).wait_for()
                await phone.screenshot(path=str(ARTIFACTS / "other-device.png"))
                # A hash the site's secret did not make: no widget at all.
                forged = await (await browser.new_context()).new_page()
                await forged.goto(shop.origin + "/?user=customer-42&forged=1")
                await asyncio.sleep(3)
                assert await forged.locator("[data-deskmate-widget]").count() == 0
            finally:
                await browser.close()
        assert await deskmate.stop() == 0
    finally:
        if deskmate.proc is not None and deskmate.proc.returncode is None:
            deskmate.proc.kill()
        print(deskmate.logs())
