"""The console speaks its reader's language: the browser's Accept-Language,
or the language picked on a page (kept in a cookie), on every page of the
translated rooms, in their flash messages and refusals too."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from adapters.webconsole.language import LANGUAGE_COOKIE
from bot.language import accepted_language
from storage.repository import Repository
from tests.webconsole.serving import SESSION, serving_console

# The pages of the translated rooms, as an admin reaches them.
PAGES = ("/console", "/console/tickets", "/console/knowledge", "/console/documents")


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("", "en"),
        ("de-CH", "de"),
        ("fr-CH, fr;q=0.9, en;q=0.8", "fr"),
        ("ja, sv;q=0.5, de;q=0.7", "de"),  # the most wanted one Deskmate ships
        ("en-US;q=0.2, zh-CN", "zh"),
        ("pt-BR, it", "en"),
        ("sv;q=0, es", "es"),  # q=0: not wanted at all
        ("de;q=oops, es;q=0.5", "es"),
    ],
)
def test_the_browsers_language_is_the_most_wanted_shipped_one(header: str, language: str) -> None:
    assert accepted_language(header) == language


@pytest.fixture
async def console(sqlite_repository: Repository) -> AsyncIterator[str]:
    async with serving_console(sqlite_repository.db) as base:
        yield base


async def _page(
    client: aiohttp.ClientSession, url: str, *, accept: str = "", cookies: str = ""
) -> tuple[str, aiohttp.ClientResponse]:
    headers = {"Cookie": "; ".join(c for c in (SESSION, cookies) if c)}
    if accept:
        headers["Accept-Language"] = accept
    async with client.get(url, headers=headers, allow_redirects=False) as response:
        assert response.status == 200, await response.text()
        return await response.text(), response


def _nav(html: str) -> list[str]:
    return re.findall(r'<li><a href="[^"]*"(?: aria-current="page")?>([^<]+)</a></li>', html)


async def test_every_page_follows_the_browsers_language(console: str) -> None:
    async with aiohttp.ClientSession() as client:
        for path in PAGES:
            english, _ = await _page(client, console + path)
            german, _ = await _page(client, console + path, accept="de-DE,de;q=0.9,en;q=0.5")
            assert '<html lang="en">' in english and '<html lang="de">' in german, path
            assert _nav(english)[:3] == ["Overview", "Conversations", "Tickets"]
            assert _nav(german)[:3] == ["Übersicht", "Gespräche", "Tickets"]
            assert "Abmelden" in german and "Sign out" not in german
        tickets, _ = await _page(client, console + "/console/tickets", accept="zh-CN")
        assert "队列：0 个未结" in tickets and "没有人在等待。" in tickets
        assert "Nobody is waiting" not in tickets and "Queue:" not in tickets
        overview, _ = await _page(client, console + "/console", accept="es")
        assert "Conversaciones por día, por plataforma" in overview
        assert "No hay datos en este periodo" in overview  # the charts' own words
        assert "Answered from the FAQ" not in overview
        documents, _ = await _page(client, console + "/console/documents", accept="fr")
        assert "Ce processus tourne sans bibliothèque de documents." in documents
        assert "Lost track of the work" not in documents  # the page's script too
        assert "perdu de vue ; rechargez la page." in documents


async def test_a_language_chosen_on_a_page_is_kept(console: str) -> None:
    async with aiohttp.ClientSession() as client:
        html, response = await _page(client, console + "/console/knowledge?lang=sv", accept="de-DE")
        assert "Kunskapsbas" in html and '<option value="sv" lang="sv" selected>' in html
        kept = response.cookies[LANGUAGE_COOKIE]
        assert kept.value == "sv" and kept["path"] == "/console" and kept["httponly"]
        # Later pages, without ?lang=, keep the choice over the browser's.
        html, _ = await _page(
            client, console + "/console/tickets", accept="de-DE", cookies=f"{LANGUAGE_COOKIE}=sv"
        )
        assert "Ingen väntar." in html
        # A code Deskmate does not ship changes nothing.
        html, response = await _page(client, console + "/console/tickets?lang=xx", accept="de")
        assert "Niemand wartet." in html and LANGUAGE_COOKIE not in response.cookies
        # The language form keeps the page's other choices.
        html, _ = await _page(client, console + "/console/knowledge?q=hours&lang=fr")
        form = html[html.index('id="language-choice"') :]
        form = form[: form.index("</form>")]
        assert '<input type="hidden" name="q" value="hours">' in form
        assert 'name="lang"' in form and form.count('name="lang"') == 1


async def test_flash_messages_and_refusals_follow_the_reader(console: str) -> None:
    async with aiohttp.ClientSession() as client:
        headers = {"Cookie": SESSION, "Accept-Language": "de", "Origin": console}
        form = {"csrf": "csrf-token", "action": "action-0001", "text": "hi"}
        async with client.post(
            console + "/console/tickets/41/claim",
            data=form,
            headers=headers,
            allow_redirects=False,
        ) as response:
            assert response.status == 303
        async with client.get(
            console + "/console/tickets/41", headers={"Cookie": SESSION, "Accept-Language": "de"}
        ) as response:
            assert response.status == 404
            html = await response.text()
        # No such ticket: said in German, as the flash after the action and on the page.
        assert '<p class="flash" role="status">Es gibt kein Ticket #41.</p>' in html
        assert "<h1>Nicht gefunden</h1>" in html and "Dieses Ticket gibt es nicht." in html
        async with client.post(
            console + "/console/knowledge/entries",
            data={"csrf": "csrf-token", "question": "q", "answer": "a"},
            headers={**headers, "Accept-Language": "es"},
        ) as response:
            assert response.status == 503
            assert (await response.json()) == {"error": "no hay base de conocimiento"}


async def test_the_widget_sites_page_and_its_refusals_follow_the_reader(console: str) -> None:
    async with aiohttp.ClientSession() as client:
        html, _ = await _page(client, console + "/console/sites", accept="fr")
        assert '<html lang="fr">' in html and "Widget du site web" in html
        assert "Website widget" not in html
