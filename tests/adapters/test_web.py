"""The local web chat's HTTP API in process, against an in-memory Conversations."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from adapters.web import HttpServer, WebChat
from tests.adapters.conversations import Echo


@pytest.fixture
async def chat_url() -> AsyncIterator[str]:
    http = HttpServer(host="127.0.0.1", port=0)
    chat = WebChat(http=http)
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
