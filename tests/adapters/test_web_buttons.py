"""Buttons in the local web chat: the reply's buttons in a header beside the
plain-text stream, notices' buttons in the polled outbox, and the page drawing
them as real buttons that send their command (headless Chromium, when there)."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import unquote

import aiohttp
import pytest

from adapters.web import BUTTONS_HEADER, HttpServer, WebChat
from bot.manager import ConversationManager
from bot.team.service import RATING_BUTTONS, Team, TeamSettings
from bot.types import ConversationRef
from llm.fake import FakeBackend
from storage.repository import Repository
from storage.team_repo import TeamRepository
from storage.web_repo import WebRepository
from tests.conftest import make_manager

SESSION = "session-buttons1"
RATING = [{"label": "👍", "command": "/rate good"}, {"label": "👎", "command": "/rate bad"}]


@dataclass
class Served:
    base: str
    chat: WebChat
    manager: ConversationManager


@pytest.fixture
async def served(sqlite_repository: Repository, backend: FakeBackend) -> AsyncIterator[Served]:
    team = Team(
        TeamRepository(sqlite_repository.db),
        owners={"test:admin"},
        settings=TeamSettings(ask_rating="all"),
    )
    manager = make_manager(sqlite_repository, backend, team=team)
    http = HttpServer(host="127.0.0.1", port=0)
    chat = WebChat(http=http, store=WebRepository(sqlite_repository.db))
    await http.start()
    await chat.start(manager)
    yield Served(f"http://127.0.0.1:{http.port}", chat, manager)
    await chat.stop()
    await http.stop()


async def say(
    session: aiohttp.ClientSession, base: str, text: str, message_id: str
) -> tuple[int, str, list[dict[str, str]]]:
    body = {"session": SESSION, "text": text, "message_id": message_id}
    async with session.post(base + "/api/chat", json=body) as response:
        raw = response.headers.get(BUTTONS_HEADER, "")
        buttons = json.loads(unquote(raw)) if raw else []
        return response.status, await response.text(), buttons


def visitor_of(session: aiohttp.ClientSession) -> str:
    """The visitor id the server gave this client (its cookie)."""
    [cookie] = [c for c in session.cookie_jar if c.key == "deskmate_visitor"]
    return cookie.value.partition(".")[0]


def browser() -> aiohttp.ClientSession:
    # unsafe: keep cookies for an IP address such as 127.0.0.1, as browsers do.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_a_reply_streams_plain_text_with_its_buttons_in_a_header(served: Served) -> None:
    async with browser() as session:
        status, text, buttons = await say(session, served.base, "hello", "msg-0000001")
        assert status == 200 and text.startswith("echo: hello") and "How did I do?" in text
        assert buttons == RATING
        # Pressing 👍 sends its command; the same press sent again is a duplicate.
        status, text, buttons = await say(session, served.base, "/rate good", "msg-0000002")
        assert (status, text, buttons) == (200, "Thanks for the feedback!", [])
        status, _, _ = await say(session, served.base, "/rate good", "msg-0000002")
        assert status == 409
        visitor = visitor_of(session)
    assert served.manager.team is not None
    [rating] = await served.manager.team.repository.ratings()
    assert rating.score == 1 and rating.user_id == f"web:{visitor}"


async def test_notices_in_the_outbox_carry_their_buttons(served: Served) -> None:
    async with browser() as session:
        async with session.get(served.base + "/") as page:
            assert page.status == 200
        ref = ConversationRef("web", "local", f"{visitor_of(session)}.{SESSION}")
        await served.chat.post(ref, "Resolved; how did we do?", buttons=RATING_BUTTONS)
        await served.chat.send(ref, "A plain notice")
        async with session.get(served.base + "/api/outbox") as response:
            body = await response.json()
    assert body["messages"] == ["Resolved; how did we do?", "A plain notice"]
    assert body["entries"] == [
        {"text": "Resolved; how did we do?", "buttons": RATING, "session": SESSION},
        {"text": "A plain notice", "buttons": [], "session": SESSION},
    ]


def _chromium() -> str:
    pytest.importorskip("playwright.async_api")
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not shutil.which(path):
        pytest.skip("no Chromium to run the page in")
    return path


async def test_the_page_draws_buttons_that_send_their_command(served: Served) -> None:
    chromium = _chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = await browser.new_page()
            await page.goto(served.base + "/")
            await page.fill("#text", "hello")
            await page.keyboard.press("Enter")
            thumbs_up = page.get_by_role("button", name="👍")
            await thumbs_up.wait_for(timeout=10_000)
            assert await page.get_by_role("button", name="👎").count() == 1
            # Keyboard first: Tab reaches it, Enter presses it.
            await thumbs_up.focus()
            await page.keyboard.press("Enter")
            await page.get_by_text("Thanks for the feedback!").wait_for(timeout=10_000)
            assert await thumbs_up.is_disabled()
            # A notice polled from the outbox gets its buttons too.
            session = await page.evaluate("session")
            [cookie] = [c for c in await page.context.cookies() if c["name"] == "deskmate_visitor"]
            visitor = cookie["value"].partition(".")[0]
            await served.chat.post(
                ConversationRef("web", "local", f"{visitor}.{session}"),
                "Anything else?",
                buttons=[("Ask a person", "/human")],
            )
            await page.evaluate("pollOutbox()")
            await page.get_by_role("button", name="Ask a person").wait_for(timeout=10_000)
        finally:
            await browser.close()
    assert served.manager.team is not None
    [rating] = await served.manager.team.repository.ratings()
    assert rating.score == 1
