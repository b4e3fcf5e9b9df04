"""The local web chat's HTTP API in process, against an in-memory Conversations."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from adapters.web import RETRACT, HttpServer, SessionThrottle, WebChat
from bot.messages import say
from storage.repository import Repository
from storage.web_repo import WebRepository
from tests.adapters.conversations import Echo, TakesBack

TOKEN = "s3cret-token-0123456789"


@pytest.fixture
async def chat_url(sqlite_repository: Repository) -> AsyncIterator[str]:
    http = HttpServer(host="127.0.0.1", port=0)
    chat = WebChat(http=http, store=WebRepository(sqlite_repository.db))
    await http.start()
    await chat.start(Echo())
    yield f"http://127.0.0.1:{http.port}/api/chat"
    await chat.stop()
    await http.stop()


async def test_a_message_is_answered_as_streamed_text(chat_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        body = {"session": "session-abc123", "text": "hi", "message_id": "msg-000001"}
        async with session.post(chat_url, json=body) as response:
            assert response.status == 200
            assert await response.text() == "echo: hi"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"session": "session-abc123", "text": "\xff"}', "application/json"),
        (b'{"session": "session-abc123", "text": "hi"}', "application/json; charset=foo"),
    ],
    ids=["invalid-utf8", "unknown-charset"],
)
async def test_an_unreadable_body_gets_400(chat_url: str, body: bytes, content_type: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(chat_url, data=body, headers={"Content-Type": content_type}) as response,
    ):
        assert response.status == 400
        assert "error" in await response.json()


@pytest.fixture
async def guarded(sqlite_repository: Repository) -> AsyncIterator[str]:
    http = HttpServer(host="127.0.0.1", port=0)
    chat = WebChat(
        http=http,
        store=WebRepository(sqlite_repository.db),
        token=TOKEN,
        throttle=SessionThrottle(rate=2, per=60),
    )
    await http.start()
    await chat.start(Echo())
    yield f"http://127.0.0.1:{http.port}"
    await chat.stop()
    await http.stop()


async def test_a_token_guards_the_page_and_the_api(guarded: str) -> None:
    body = {"session": "session-abc123", "text": "hi", "message_id": "msg-000001"}
    # unsafe: keep cookies for an IP address such as 127.0.0.1, as browsers do.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(guarded + "/") as response:
            assert response.status == 401
        async with session.post(guarded + "/api/chat", json=body) as response:
            assert response.status == 401
        async with session.get(guarded + "/api/outbox?session=session-abc123") as response:
            assert response.status == 401
        async with session.get(guarded + "/?token=wrong") as response:
            assert response.status == 401
        async with session.get(guarded + f"/?token={TOKEN}") as response:
            # Redirected to the bare page, the token now in an HttpOnly cookie.
            assert response.status == 200 and response.url.query_string == ""
            assert "<html" in (await response.text()).lower()
        async with session.post(guarded + "/api/chat", json=body) as response:
            assert response.status == 200 and await response.text() == "echo: hi"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        body["message_id"] = "msg-000002"
        async with session.post(guarded + "/api/chat", json=body) as response:
            assert response.status == 200


async def test_a_visitor_is_throttled_and_only_json_is_taken(guarded: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(headers=headers, cookie_jar=jar) as session:
        url = guarded + "/api/chat"
        plain = "session=session-abc123&text=hi"
        async with session.post(url, data=plain, headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 415
            assert (await r.json())["error"] == say("web.send_json")
        # The refusal is in the browser's language.
        german = {"Content-Type": "text/plain", "Accept-Language": "de-AT,de;q=0.9,en;q=0.5"}
        async with session.post(url, data=plain, headers=german) as r:
            assert r.status == 415
            assert (await r.json())["error"] == say("web.send_json", "de") != say("web.send_json")
        # The most wanted language Deskmate ships, by the browser's weights.
        weighed = {"Content-Type": "text/plain", "Accept-Language": "ja, sv;q=0.5, fr;q=0.8"}
        async with session.post(url, data=plain, headers=weighed) as r:
            assert (await r.json())["error"] == say("web.send_json", "fr")
        statuses = []
        for n in range(3):
            body = {"session": "session-abc123", "text": "hi", "message_id": f"msg-00000{n}"}
            async with session.post(url, json=body) as response:
                statuses.append(response.status)
                retry = response.headers.get("Retry-After")
        assert statuses == [200, 200, 429] and retry is not None and int(retry) >= 1
        # Another conversation of the same visitor shares the limit...
        other = {"session": "session-other1", "text": "hi", "message_id": "msg-000009"}
        async with session.post(url, json=other) as response:
            assert response.status == 429
    # ...another visitor has their own.
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.post(url, json=other) as response,
    ):
        assert response.status == 200


def test_the_throttle_refills_and_forgets_idle_sessions() -> None:
    throttle = SessionThrottle(rate=2, per=10, capacity=2)
    assert [throttle.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 5.0]
    assert throttle.take("a", now=5.0) == 0.0
    throttle.take("b", now=5.0)
    throttle.take("c", now=5.0)
    assert len(throttle) == 2 and "a" not in throttle._buckets


async def test_an_answer_taken_back_is_marked_for_the_page(sqlite_repository: Repository) -> None:
    http = HttpServer(host="127.0.0.1", port=0)
    chat = WebChat(http=http, store=WebRepository(sqlite_repository.db))
    await http.start()
    await chat.start(TakesBack())
    try:
        async with aiohttp.ClientSession() as session:
            body = {"session": "session-abc123", "text": "hi", "message_id": "msg-000001"}
            url = f"http://127.0.0.1:{http.port}/api/chat"
            async with session.post(url, json=body) as response:
                text = await response.text()
    finally:
        await chat.stop()
        await http.stop()
    # The page shows what follows the last form feed: the notice alone.
    assert text == f"sure: hi\nmore{RETRACT}Withheld."
    assert text.rsplit(RETRACT, 1)[-1] == "Withheld."
