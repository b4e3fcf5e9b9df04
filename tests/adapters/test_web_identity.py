"""The web chat's visitors over real HTTP: messages waiting for a visitor are
theirs alone, kept in the database through a restart, and taken once however
many workers the page's polls reach (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import ip_network

import aiohttp
import pytest

from adapters.visitors import Visitor, VisitorKeys
from adapters.web import HttpServer, WebChat
from bot.manager import ConversationManager
from bot.types import ConversationRef
from llm.fake import FakeBackend
from storage.db import Database
from storage.repository import Repository
from storage.web_repo import WebRepository
from tests.adapters.conversations import Echo
from tests.conftest import make_manager

TOKEN = "web-token-for-tests-0123456789"
MARKER = "order-XK42-marker"


@asynccontextmanager
async def worker(
    url: str, *, conversations: Echo | ConversationManager | None = None, **options: object
) -> AsyncIterator[tuple[str, WebChat]]:
    """One process's web chat: its own database connection and HTTP server."""
    db = Database(url)
    http = HttpServer(host="127.0.0.1", port=0)
    chat = WebChat(http=http, store=WebRepository(db), **options)  # type: ignore[arg-type]
    await http.start()
    await chat.start(conversations or Echo())
    try:
        yield f"http://127.0.0.1:{http.port}", chat
    finally:
        await chat.stop()
        await http.stop()
        await db.dispose()


def browser(**headers: str) -> aiohttp.ClientSession:
    # unsafe: keep cookies for an IP address such as 127.0.0.1, as browsers do.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers=headers)


async def identity(session: aiohttp.ClientSession, base: str) -> str:
    """Open the page: the visitor's token, as the cookie it was given holds it."""
    async with session.get(base + "/") as page:
        assert page.status == 200
    [cookie] = [c for c in session.cookie_jar if c.key == "deskmate_visitor"]
    return cookie.value


async def poll(session: aiohttp.ClientSession, base: str, **headers: str) -> tuple[int, list[str]]:
    async with session.get(base + "/api/outbox?session=session-tab00001", headers=headers) as r:
        if r.status != 200:
            return r.status, []
        return r.status, (await r.json())["messages"]


def url_of(repository: Repository) -> str:
    return repository.db.url.render_as_string(hide_password=False)


async def test_a_visitors_messages_are_theirs_alone(repository: Repository) -> None:
    async with worker(url_of(repository)) as (base, chat), browser() as victim:
        token = await identity(victim, base)
        visitor = token.partition(".")[0]
        ref = ConversationRef("web", "local", f"{visitor}.session-tab00001")
        await chat.post(ref, "Your refund is on its way.", buttons=[("Thanks", "/rate good")])
        async with browser() as stranger:
            # No identity, the victim's conversation named: 401.
            assert await poll(stranger, base) == (401, [])
            # The victim's visitor id with a made-up signature: 401.
            forged = {"X-Deskmate-Visitor": f"{visitor}.{'A' * 43}"}
            assert await poll(stranger, base, **forged) == (401, [])
            # An identity of their own: their own (empty) messages.
            await identity(stranger, base)
            assert await poll(stranger, base) == (200, [])
        # The victim, by cookie or (as the widget does) by header.
        assert await poll(victim, base) == (200, ["Your refund is on its way."])
        await chat.send(ref, "Anything else?")
        async with browser() as widget:
            assert await poll(widget, base, **{"X-Deskmate-Visitor": token}) == (
                200,
                ["Anything else?"],
            )
        assert await poll(victim, base) == (200, [])


async def test_a_fresh_identity_comes_with_the_answer(repository: Repository) -> None:
    echo = Echo()
    async with (
        worker(url_of(repository), conversations=echo) as (base, _),
        aiohttp.ClientSession() as client,
    ):
        body = {"session": "session-tab00001", "text": "hi", "message_id": "message-0001"}
        async with client.post(base + "/api/chat", json=body) as response:
            assert response.status == 200 and await response.text() == "echo: hi"
            token = response.headers["X-Deskmate-Visitor"]
        # Sent back in the header, it is the same visitor, and kept.
        body["message_id"] = "message-0002"
        headers = {"X-Deskmate-Visitor": token}
        async with client.post(base + "/api/chat", json=body, headers=headers) as response:
            assert response.status == 200
            assert "X-Deskmate-Visitor" not in response.headers
    first, second = echo.accepted
    visitor = token.partition(".")[0]
    assert first.user == second.user == visitor
    assert first.ref == second.ref == ConversationRef("web", "local", f"{visitor}.session-tab00001")
    assert second.event_id == f"{visitor}:message-0002"


async def test_waiting_messages_survive_a_restart_and_go_out_once_across_workers(
    repository: Repository,
) -> None:
    url = url_of(repository)
    async with worker(url) as (base, chat), browser() as page:
        token = await identity(page, base)
        visitor = token.partition(".")[0]
        ref = ConversationRef("web", "local", f"{visitor}.session-tab00001")
        await chat.post(ref, "An agent answered: it ships Monday.")
    # The process that kept the message is gone; two new workers share the database.
    async with worker(url) as (first, _), worker(url) as (second, _), browser() as page:
        headers = {"X-Deskmate-Visitor": token}
        results = await asyncio.gather(
            *[poll(page, base_url, **headers) for base_url in (first, second) * 4]
        )
        assert all(status == 200 for status, _ in results)
        delivered = [text for _, texts in results for text in texts]
        assert delivered == ["An agent answered: it ships Monday."]
        assert await poll(page, first, **headers) == (200, [])


async def test_at_most_the_newest_messages_wait(sqlite_repository: Repository) -> None:
    store = WebRepository(sqlite_repository.db)
    for n in range(105):
        await store.put(visitor="v" * 32, chat="v" * 32, text=f"message {n}")
    waiting = await store.take("v" * 32)
    assert [m.text for m in waiting] == [f"message {n}" for n in range(5, 105)]


async def test_wrong_tokens_are_limited_per_real_client_behind_a_trusted_proxy(
    sqlite_repository: Repository,
) -> None:
    url = url_of(sqlite_repository)
    trusted = [ip_network("127.0.0.1/32")]
    async with (
        worker(url, token=TOKEN, trusted=trusted) as (base, _),
        aiohttp.ClientSession() as proxy,
    ):
        guesser = {"X-Forwarded-For": "203.0.113.5"}
        for n in range(10):
            async with proxy.get(f"{base}/?token=guess-{n:04d}", headers=guesser) as r:
                assert r.status == 401
        async with proxy.get(f"{base}/?token={TOKEN}", headers=guesser) as r:
            assert r.status == 429
        # While it is locked out, even the right token as a bearer is refused.
        bearer = {**guesser, "Authorization": f"Bearer {TOKEN}"}
        async with proxy.get(f"{base}/api/outbox", headers=bearer) as r:
            assert r.status == 429
        # Another client behind the same proxy is not locked out.
        other = {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"}
        entry = f"{base}/?token={TOKEN}"
        async with proxy.get(entry, headers=other, allow_redirects=False) as r:
            assert r.status == 303
            cookie = r.headers.getall("Set-Cookie")[0]
            assert "deskmate_web=" in cookie and "Secure" in cookie


def test_a_visitor_token_is_checked_against_the_deployments_keys() -> None:
    old = VisitorKeys.of(configured="old-operator-key", stored="generated-key")
    # A new key in front: it signs, and the old one's visitors stay who they are.
    new = VisitorKeys.of(configured="new-operator-key, old-operator-key", stored="generated-key")
    issued = old.issue()
    assert issued.fresh and new.check(issued.token) == Visitor(issued.id, issued.token)
    assert old.check(new.issue().token) is None
    # Without DESKMATE_SECRET_KEY the generated key signs; with it, it does not.
    generated = VisitorKeys.of(configured="", stored="generated-key")
    assert old.check(generated.issue().token) is None
    assert generated.check(issued.token) is None
    visitor = issued.id
    for bad in ("", visitor, f"{visitor}.", f"{visitor[:-1]}x.{issued.token.split('.')[1]}"):
        assert old.check(bad) is None


@pytest.mark.parametrize("forwarded", ["X-Forwarded-For", "Forwarded", "X-Real-IP"])
async def test_a_proxied_request_needs_the_token(
    sqlite_repository: Repository, forwarded: str
) -> None:
    async with worker(url_of(sqlite_repository)) as (base, _), aiohttp.ClientSession() as client:
        async with client.get(base + "/", headers={forwarded: "for=203.0.113.5"}) as r:
            assert r.status == 403
        async with client.get(base + "/") as r:
            assert r.status == 200


async def test_forget_takes_what_waits_for_the_visitor(
    sqlite_repository: Repository, backend: FakeBackend
) -> None:
    manager = make_manager(sqlite_repository, backend)
    url = url_of(sqlite_repository)
    async with worker(url, conversations=manager) as (base, chat), browser() as page:
        token = await identity(page, base)
        visitor = token.partition(".")[0]
        ref = ConversationRef("web", "local", f"{visitor}.session-tab00001")
        await chat.post(ref, f"About your order {MARKER}: it ships Monday.")
        await chat.post(ConversationRef("web", "local", "f" * 32), "Someone else's message")
        body = {"session": "session-tab00001", "text": "/forget"}
        async with page.post(base + "/api/chat", json=body) as response:
            assert response.status == 200
        assert await poll(page, base) == (200, [])
    # Only theirs went.
    store = WebRepository(sqlite_repository.db)
    assert [m.text for m in await store.take("f" * 32)] == ["Someone else's message"]
