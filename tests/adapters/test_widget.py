"""The website widget's HTTP API on a real server and a real SQLite file:
origins, CORS, identities bound to a site, signed users, limits, and the
messages that wait for a visitor."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from adapters.visitors import HEADER as VISITOR
from adapters.web import HttpServer
from adapters.widget import WidgetChat
from bot.manager import ConversationManager
from bot.types import ConversationRef
from bot.widget_sites import WidgetSites, user_hash
from llm.errors import LLMBusy
from llm.fake import FakeBackend
from storage.repository import Repository
from storage.web_repo import WebRepository
from storage.widget_repo import WidgetRepository, WidgetSite
from tests.conftest import make_manager

SHOP = "http://shop.example"
BLOG = "https://blog.example:8443"
EVIL = "http://evil.example"


@dataclass
class Served:
    base: str
    chat: WidgetChat
    manager: ConversationManager
    sites: WidgetSites
    shop: WidgetSite
    blog: WidgetSite

    def url(self, route: str, site: WidgetSite | None = None) -> str:
        return f"{self.base}/widget/api/{route}?site={(site or self.shop).key}"


async def serve(
    repository: Repository,
    backend: FakeBackend,
    manager: ConversationManager | None = None,
    **options: Any,
) -> tuple[HttpServer, Served]:
    manager = manager or make_manager(repository, backend)
    sites = WidgetSites(WidgetRepository(repository.db))
    shop = await sites.add([SHOP], actor="test")
    blog = await sites.add([BLOG], actor="test")
    http = HttpServer(host="127.0.0.1", port=0)
    chat = WidgetChat(
        http=http, sites=sites, store=WebRepository(repository.db), site_ttl=0, **options
    )
    await http.start()
    await chat.start(manager)
    return http, Served(f"http://127.0.0.1:{http.port}", chat, manager, sites, shop, blog)


@pytest.fixture
async def served(sqlite_repository: Repository, backend: FakeBackend) -> AsyncIterator[Served]:
    http, made = await serve(sqlite_repository, backend)
    yield made
    await made.chat.stop()
    await http.stop()


async def ask(
    session: aiohttp.ClientSession,
    served: Served,
    text: str,
    *,
    origin: str = SHOP,
    site: WidgetSite | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], list[tuple[str, Any]]]:
    """Status, headers and the events of one message."""
    sent = {"Origin": origin, **(headers or {})}
    async with session.post(
        served.url("chat", site), json={"text": text}, headers=sent
    ) as response:
        raw = await response.text()
        events = []
        if response.status == 200:
            for block in raw.strip().split("\n\n"):
                name, data = block.split("\n")
                events.append((name.removeprefix("event: "), json.loads(data[6:])))
        else:
            events.append(("error", json.loads(raw)))
        return response.status, dict(response.headers), events


def final_text(events: list[tuple[str, Any]]) -> str:
    return [data for name, data in events if name == "text"][-1]["text"]


async def test_an_allowed_origin_gets_its_settings_and_a_visitor_of_its_site(
    served: Served,
) -> None:
    async with aiohttp.ClientSession() as session:
        headers = {"Origin": SHOP, "X-Deskmate-Language": "de-AT"}
        async with session.get(served.url("config"), headers=headers) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == SHOP
            body = await response.json()
        assert body["title"] == "Chat with us"
        assert body["color"] == "#2f6fde"
        assert body["language"] == "de"
        # The visitor's language: German texts from the catalog.
        assert body["texts"]["open"] == "Chat öffnen"
        assert served.chat._visitor_keys(served.shop).check(body["visitor"]) is not None
        preflight = {
            "Origin": SHOP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-deskmate-visitor",
        }
        async with session.options(served.url("chat"), headers=preflight) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == SHOP
            assert "X-Deskmate-Visitor" in response.headers["Access-Control-Allow-Headers"]


@pytest.mark.parametrize("origin", [EVIL, "", "http://shop.example:8080", "https://shop.example"])
async def test_other_origins_are_refused_without_cors_headers(served: Served, origin: str) -> None:
    headers = {"Origin": origin} if origin else {}
    async with aiohttp.ClientSession() as session:
        for method, route in (("GET", "config"), ("OPTIONS", "chat"), ("GET", "outbox")):
            async with session.request(method, served.url(route), headers=headers) as response:
                assert response.status == 403, (method, route)
                assert "Access-Control-Allow-Origin" not in response.headers
        status, response_headers, events = await ask(session, served, "hello", origin=origin)
    assert status == 403
    assert "Access-Control-Allow-Origin" not in response_headers
    assert events == [("error", {"error": "This page may not use this chat widget."})]
    assert served.manager.metrics is not None


async def test_an_unknown_or_revoked_site_is_refused(served: Served) -> None:
    async with aiohttp.ClientSession() as session:
        url = f"{served.base}/widget/api/config?site=site_nosuchsite"
        async with session.get(url, headers={"Origin": SHOP}) as response:
            assert response.status == 404
        await served.sites.remove(served.shop.key, actor="test")
        async with session.get(served.url("config"), headers={"Origin": SHOP}) as response:
            assert response.status == 404


async def test_a_question_streams_its_answer_as_events(served: Served) -> None:
    async with aiohttp.ClientSession() as session:
        status, headers, events = await ask(session, served, "where is my parcel?")
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["Access-Control-Allow-Origin"] == SHOP
    assert VISITOR in headers  # a first message without an identity gets one
    assert final_text(events) == "echo: where is my parcel?"
    assert events[-1][0] == "done"


async def test_the_model_being_busy_is_said_plainly(served: Served, backend: FakeBackend) -> None:
    backend.enqueue(error=LLMBusy("queue full", position=12))
    async with aiohttp.ClientSession() as session:
        status, _, events = await ask(session, served, "anyone there?")
    assert status == 200
    assert "helping a lot of people right now" in final_text(events)


async def test_a_visitor_of_one_site_is_a_stranger_on_another(served: Served) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(served.url("config"), headers={"Origin": SHOP}) as response:
            token = (await response.json())["visitor"]
        on_blog = {"Origin": BLOG, VISITOR: token}
        async with session.get(served.url("outbox", served.blog), headers=on_blog) as response:
            assert response.status == 401
            assert "another site" in (await response.json())["error"]
        async with session.get(served.url("config", served.blog), headers=on_blog) as response:
            fresh = (await response.json())["visitor"]
        assert fresh.partition(".")[0] != token.partition(".")[0]
        mine = {"Origin": SHOP, VISITOR: token}
        async with session.get(served.url("outbox"), headers=mine) as response:
            assert response.status == 200


async def test_a_signed_user_is_the_same_person_on_every_device(served: Served) -> None:
    signed = {
        "X-Deskmate-User": "customer-42",
        "X-Deskmate-User-Hash": user_hash(served.shop.secret, "customer-42"),
    }
    async with aiohttp.ClientSession() as laptop:
        status, headers, events = await ask(laptop, served, "hi from the laptop", headers=signed)
        assert status == 200 and VISITOR not in headers
    [conversation] = [
        ref for ref in await _conversations(served) if ref.chat.startswith(served.shop.key)
    ]
    await served.chat.post(conversation, "An agent's answer")
    async with aiohttp.ClientSession() as phone:
        headers = {"Origin": SHOP, **signed}
        async with phone.get(served.url("outbox"), headers=headers) as response:
            assert (await response.json())["entries"] == [
                {"text": "An agent's answer", "buttons": []}
            ]
        # The phone's panel has nothing kept: it shows the stored conversation.
        async with phone.get(served.url("history"), headers=headers) as response:
            assert (await response.json())["messages"] == [
                {"role": "user", "text": "hi from the laptop"},
                {"role": "assistant", "text": "echo: hi from the laptop"},
            ]
        forged = {**signed, "X-Deskmate-User": "customer-43"}
        status, _, events = await ask(phone, served, "let me in", headers=forged)
        assert status == 403
        assert "could not be verified" in events[0][1]["error"]


async def test_waiting_messages_are_taken_once(served: Served) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(served.url("config"), headers={"Origin": SHOP}) as response:
            token = (await response.json())["visitor"]
        person = token.partition(".")[0]
        ref = ConversationRef("widget", "local", f"{served.shop.key}.{person}")
        await served.chat.post(ref, "Resolved; how did we do?", buttons=[("👍", "/rate good")])
        headers = {"Origin": SHOP, VISITOR: token}
        seen = []
        for _ in range(2):
            async with session.get(served.url("outbox"), headers=headers) as response:
                seen += (await response.json())["entries"]
    assert seen == [
        {"text": "Resolved; how did we do?", "buttons": [{"label": "👍", "command": "/rate good"}]}
    ]


async def test_messages_too_long_or_too_fast_are_refused_with_a_reason(
    sqlite_repository: Repository, backend: FakeBackend
) -> None:
    http, served = await serve(
        sqlite_repository, backend, visitor_rate=2, site_rate=3, max_chars=50
    )
    try:
        async with aiohttp.ClientSession() as session:
            status, _, events = await ask(session, served, "x" * 51)
            assert status == 413
            assert "under 50 characters" in events[0][1]["error"]
            status, headers, _ = await ask(session, served, "one")
            token = {VISITOR: headers[VISITOR]}
            assert status == 200
            assert (await ask(session, served, "two", headers=token))[0] == 200
            status, headers, events = await ask(session, served, "three", headers=token)
            assert status == 429
            assert headers["Access-Control-Allow-Origin"] == SHOP
            assert int(headers["Retry-After"]) >= 1
            assert "sending messages quickly" in events[0][1]["error"]
            # Another visitor of the same site: the site's own limit (3 a minute) is spent.
            assert (await ask(session, served, "four"))[0] == 200
            status, _, events = await ask(session, served, "five")
            assert status == 429
            assert "Many people are chatting" in events[0][1]["error"]
    finally:
        await served.chat.stop()
        await http.stop()


async def test_an_email_address_is_checked_and_goes_into_the_conversation(
    served: Served,
) -> None:
    async with aiohttp.ClientSession() as session:
        url = served.url("email")
        async with session.post(
            url, json={"email": "not an address"}, headers={"Origin": SHOP}
        ) as r:
            assert r.status == 400
        async with session.post(
            url, json={"email": "ana@example.com"}, headers={"Origin": SHOP}
        ) as r:
            assert r.status == 200
            assert "My email address for an answer: ana@example.com" in await r.text()


async def test_forget_removes_what_waits_for_a_widget_visitor(served: Served) -> None:
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await ask(session, served, "hello")
        token = headers[VISITOR]
        person = token.partition(".")[0]
        ref = ConversationRef("widget", "local", f"{served.shop.key}.{person}")
        await served.chat.post(ref, "waiting for you")
        status, _, events = await ask(session, served, "/forget", headers={VISITOR: token})
        assert status == 200
        assert "deleted" in final_text(events).lower()
        async with session.get(
            served.url("outbox"), headers={"Origin": SHOP, VISITOR: token}
        ) as response:
            assert (await response.json())["entries"] == []


async def test_the_script_is_served_small_and_self_contained(served: Served) -> None:
    import gzip

    async with (
        aiohttp.ClientSession() as session,
        session.get(served.base + "/widget.js") as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/javascript"
        body = await response.read()
    assert len(gzip.compress(body)) < 30 * 1024
    # Nothing fetched from anywhere but the script's own origin.
    assert b"https://" not in body.replace(b"https://HOST", b"")


async def _conversations(served: Served) -> list[ConversationRef]:
    from sqlalchemy import select

    from storage.models import conversations

    def op(conn: Any) -> list[ConversationRef]:
        rows = conn.execute(
            select(
                conversations.c.platform,
                conversations.c.tenant,
                conversations.c.chat,
                conversations.c.thread,
            )
        ).all()
        return [ConversationRef(*row) for row in rows]

    return await served.manager.repository.db.run(op, what="list conversations")


async def test_with_two_workers_each_waiting_message_is_handed_out_once(
    repository: Repository, backend: FakeBackend
) -> None:
    """Two processes' widgets on one database (SQLite file, PostgreSQL): a
    page polling both at once still gets every agent message exactly once."""
    first_http, first = await serve(repository, backend)
    second_http = HttpServer(host="127.0.0.1", port=0)
    second = WidgetChat(
        http=second_http, sites=first.sites, store=WebRepository(repository.db), site_ttl=0
    )
    await second_http.start()
    await second.start(first.manager)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(first.url("config"), headers={"Origin": SHOP}) as response:
                token = (await response.json())["visitor"]
            ref = ConversationRef("widget", "local", f"{first.shop.key}.{token.partition('.')[0]}")
            headers = {"Origin": SHOP, VISITOR: token}
            bases = (first.base, f"http://127.0.0.1:{second_http.port}")

            async def poll(base: str) -> list[str]:
                url = f"{base}/widget/api/outbox?site={first.shop.key}"
                async with session.get(url, headers=headers) as response:
                    return [e["text"] for e in (await response.json())["entries"]]

            seen: list[str] = []
            for n in range(20):
                await first.chat.post(ref, f"agent message {n}")
                for got in await asyncio.gather(*(poll(b) for b in bases * 2)):
                    seen += got
        assert sorted(seen) == sorted(f"agent message {n}" for n in range(20))
    finally:
        await second.stop()
        await second_http.stop()
        await first.chat.stop()
        await first_http.stop()


async def test_a_visitors_messages_are_one_conversation_in_the_console(served: Served) -> None:
    from storage.console_repo import ConsoleRepository

    async with aiohttp.ClientSession() as session:
        status, headers, _ = await ask(session, served, "first question")
        assert status == 200
        token = {VISITOR: headers[VISITOR]}
        # The next page load sends the identity it kept: the same conversation.
        assert (await ask(session, served, "second question", headers=token))[0] == 200
    console = ConsoleRepository(served.manager.repository.db)
    [row] = await console.find_conversations(platform="widget")
    person = headers[VISITOR].partition(".")[0]
    assert row.address.chat == f"{served.shop.key}.{person}"
    assert row.users == (f"widget:{person}",)
    transcript = await console.transcript(row.id)
    assert transcript is not None
    assert [m.text for m in transcript.messages] == [
        "first question",
        "echo: first question",
        "second question",
        "echo: second question",
    ]


async def test_an_answer_taken_back_ends_as_the_notice_alone(
    sqlite_repository: Repository, backend: FakeBackend
) -> None:
    """The output guard withholds an answer after some of it was shown: the
    renderer rewrites the same message with the notice alone."""
    from bot.guard import OutputGuard
    from bot.messages import say

    guarded = make_manager(sqlite_repository, backend, guard=OutputGuard())
    http, served = await serve(sqlite_repository, backend, manager=guarded)
    token = "xoxb-2048-1234567890-AbCdEfGhIjKlMnOpQrStUvWx"
    words = "Sure, happy to help with that question of yours today. " * 3
    backend.enqueue(f"{words}The token is {token} for everything.", chunk_delay=0.02)
    try:
        async with aiohttp.ClientSession() as session:
            status, _, events = await ask(session, served, "what token do you use?")
    finally:
        await served.chat.stop()
        await http.stop()
    assert status == 200
    texts = [data for name, data in events if name == "text"]
    assert any("Sure" in t["text"] for t in texts), "some words were shown first"
    assert {t["n"] for t in texts} == {0}, "one bubble, rewritten"
    assert texts[-1]["text"] == say("conversation.withheld")
    assert all("xoxb" not in t["text"] for t in texts)
