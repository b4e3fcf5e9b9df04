"""The OpenAI-compatible HTTP backend against a local fake server (real sockets, SSE)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from llm.base import (
    Backend,
    ChatMessage,
    GenerationRequest,
    LLMBusy,
    LLMError,
    LLMTimeout,
    SamplingParams,
    TextDelta,
)
from llm.openai_http import OpenAIBackend
from tests.llm.fake_openai import FakeOpenAI, Script


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def backend(fake: FakeOpenAI) -> AsyncIterator[OpenAIBackend]:
    llm = OpenAIBackend(
        base_url=fake.url + "/v1", api_key="sk-test", model_name="", retries=2, retry_backoff=0.01
    )
    await llm.load()
    yield llm
    await llm.aclose()


def _request(text: str = "hello there", *, timeout: float | None = None) -> GenerationRequest:
    return GenerationRequest(
        messages=[ChatMessage("system", "be brief"), ChatMessage("user", text)],
        sampling=SamplingParams(max_new_tokens=50, temperature=0.0, repetition_penalty=1.2),
        timeout=timeout,
    )


async def _collect(llm: OpenAIBackend, request: GenerationRequest) -> list[TextDelta]:
    return [delta async for delta in llm.stream(request)]


async def test_streams_text_with_server_usage(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    assert isinstance(backend, Backend)
    fake.script(Script(text="Reset it from the sign-in page."))
    deltas = await _collect(backend, _request())

    assert "".join(d.text for d in deltas) == "Reset it from the sign-in page."
    assert len([d for d in deltas if d.text]) == 6
    assert deltas[-1].usage is not None
    assert deltas[-1].usage.completion_tokens == 6
    assert deltas[-1].usage.prompt_tokens == (len("be brief") // 3 + 3) + (
        len("hello there") // 3 + 3
    )
    assert all(d.usage is None for d in deltas[:-1])

    sent = fake.requests[0]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == "fake-model"  # discovered from /v1/models
    assert sent["max_tokens"] == 50
    assert sent["temperature"] == 0.0
    assert sent["repetition_penalty"] == 1.2
    assert sent["messages"][1] == {"role": "user", "content": "hello there"}
    assert fake.headers[0]["Authorization"] == "Bearer sk-test"


async def test_load_learns_model_window_and_token_ratio(backend: OpenAIBackend) -> None:
    assert backend.name == "openai:fake-model"
    assert backend.context_window == 8192
    # The fake tokenizer makes a token of every three characters (4 is the uncalibrated guess).
    assert 98 <= backend.count_tokens("x" * 300) <= 102


async def test_without_server_usage_it_is_estimated(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    fake.script(Script(text="one two three four", send_usage=False))
    deltas = await _collect(backend, _request())
    usage = deltas[-1].usage
    assert usage is not None
    # Four chunks, but 18 characters at the server's ~3 characters a token: the larger wins.
    assert usage.completion_tokens == 6
    assert usage.prompt_tokens > 0


async def test_drop_mid_stream_is_an_error_and_is_not_retried(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    fake.script(Script(text="a b c d e f g h", drop_after=3))
    received: list[str] = []
    with pytest.raises(LLMError, match=r"mid-answer|incomplete"):
        async for delta in backend.stream(_request()):
            received.append(delta.text)
    assert "".join(received) == "a b c"
    assert len(fake.requests) == 1  # a retry would have repeated "a b c"


async def test_stream_that_ends_without_finishing_is_an_error(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    fake.script(Script(text="all words sent", drop_after=3))
    with pytest.raises(LLMError, match=r"incomplete|mid-answer"):
        await _collect(backend, _request())


async def test_connection_reset_before_any_text_is_retried(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    fake.script(Script(reset_before_headers=True), Script(status=503), Script(text="third time"))
    deltas = await _collect(backend, _request())
    assert "".join(d.text for d in deltas) == "third time"
    assert len(fake.requests) == 3


async def test_gives_up_after_the_retries(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    fake.script(*(Script(reset_before_headers=True) for _ in range(3)))
    with pytest.raises(LLMError, match="after 3 attempt"):
        await _collect(backend, _request())
    assert len(fake.requests) == 3


async def test_refused_connection_retries_then_fails() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on ``port`` now.
    llm = OpenAIBackend(base_url=f"http://127.0.0.1:{port}", retries=2, retry_backoff=0.05)
    await llm.load()  # an unreachable server is not fatal at start
    started = time.monotonic()
    with pytest.raises(LLMError, match="after 3 attempt") as err:
        await _collect(llm, _request())
    await llm.aclose()
    assert not isinstance(err.value, LLMTimeout)
    assert time.monotonic() - started >= 0.05 + 0.1  # it backed off between attempts


async def test_busy_server_is_llm_busy(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    fake.script(Script(status=429, body="queue full"))
    with pytest.raises(LLMBusy):
        await _collect(backend, _request())
    assert len(fake.requests) == 1


async def test_client_error_is_reported_with_the_body(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    fake.script(Script(status=400, body='{"error": "max_tokens is too large"}'))
    with pytest.raises(LLMError, match=r"400.*max_tokens is too large"):
        await _collect(backend, _request())
    assert len(fake.requests) == 1


async def test_error_event_mid_stream(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    fake.script(Script(text="partial answer", error_event="out of memory"))
    with pytest.raises(LLMError, match="out of memory"):
        await _collect(backend, _request())


async def test_request_timeout(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    fake.script(Script(text="slow " * 20, chunk_delay=0.05))
    started = time.monotonic()
    with pytest.raises(LLMTimeout):
        await _collect(backend, _request(timeout=0.2))
    assert time.monotonic() - started < 1.0


async def test_stopping_early_closes_the_connection(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    fake.script(Script(text="word " * 200, chunk_delay=0.01))
    stream = backend.stream(_request())
    first = await anext(stream)
    assert first.text
    await stream.aclose()
    async with asyncio.timeout(2):
        while fake.disconnects == 0:  # noqa: ASYNC110 - the server's handler sets it
            await asyncio.sleep(0.01)


async def test_not_loaded_is_an_error() -> None:
    llm = OpenAIBackend(base_url="http://127.0.0.1:9")
    with pytest.raises(LLMError, match="not loaded"):
        await _collect(llm, _request())
