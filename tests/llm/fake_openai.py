"""A local OpenAI-compatible chat server for tests: real HTTP and SSE on 127.0.0.1.

Behaviour is scripted per request with ``FakeOpenAI.script(...)``; with no
script queued it answers ``echo: <last user message>``. Every request body and
header set is recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support import serve_local


@dataclass(slots=True)
class Script:
    """How to answer one chat completion request."""

    text: str | None = None  # None: echo the last user message
    status: int = 200  # non-200: answer with this status and ``body``
    body: str = ""
    drop_after: int | None = None  # cut the connection after this many content chunks
    reset_before_headers: bool = False  # close the socket without answering at all
    chunk_delay: float = 0.0
    send_usage: bool = True
    send_done: bool = True
    error_event: str | None = None  # an {"error": ...} event after the first chunk


@dataclass
class FakeOpenAI:
    model: str = "fake-model"
    max_model_len: int = 8192
    tokenize: bool = True
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    disconnects: int = 0
    # Like a serving engine with a bounded queue: with this many chat requests
    # in progress, the next one is answered 429 at once. None: no bound.
    max_running: int | None = None
    running: int = 0
    most_running: int = 0
    _scripts: deque[Script] = field(default_factory=deque)
    _runner: web.AppRunner | None = None
    port: int = 0

    def script(self, *scripts: Script) -> None:
        self._scripts.extend(scripts)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/tokenize", self._tokenize)
        self._runner, self.port = await serve_local(app)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": self.model, "object": "model", "max_model_len": self.max_model_len}
                ],
            }
        )

    async def _tokenize(self, request: web.Request) -> web.Response:
        if not self.tokenize:
            return web.json_response({"error": "not found"}, status=404)
        body = await request.json()
        text = body.get("prompt") or body.get("content") or ""
        # A pretend tokenizer: one token per three characters.
        count = max(1, len(text) // 3)
        return web.json_response({"count": count, "tokens": list(range(count))})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.max_running is not None and self.running >= self.max_running:
            return web.json_response(
                {"error": {"message": "the server's queue is full", "type": "overloaded"}},
                status=429,
            )
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            return await self._answer(request, body)
        finally:
            self.running -= 1

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        script = self._scripts.popleft() if self._scripts else Script()
        if script.reset_before_headers:
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError  # aiohttp treats this as a dropped connection
        if script.status != 200:
            return web.Response(status=script.status, text=script.body or "error")

        text = script.text
        if text is None:
            last_user = next(
                (m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), ""
            )
            text = f"echo: {last_user}"
        words = text.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for i, piece in enumerate([*pieces, None]):
                if script.drop_after is not None and i >= script.drop_after:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                if piece is None:
                    break
                if script.chunk_delay:
                    await asyncio.sleep(script.chunk_delay)
                await self._event(response, _chunk(self.model, {"content": piece}))
                if script.error_event and i == 0:
                    await self._event(response, {"error": {"message": script.error_event}})
            await self._event(response, _chunk(self.model, {}, finish_reason="stop"))
            include_usage = (body.get("stream_options") or {}).get("include_usage")
            if script.send_usage and include_usage:
                prompt_tokens = sum(len(m["content"]) // 3 + 3 for m in body["messages"])
                await self._event(
                    response,
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion.chunk",
                        "model": self.model,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": len(pieces),
                            "total_tokens": prompt_tokens + len(pieces),
                        },
                    },
                )
            if script.send_done:
                await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response

    async def _event(self, response: web.StreamResponse, payload: dict[str, Any]) -> None:
        await response.write(f"data: {json.dumps(payload)}\n\n".encode())


def _chunk(model: str, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
