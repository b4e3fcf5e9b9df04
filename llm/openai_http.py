"""An OpenAI-compatible model server (vLLM, TGI, llama.cpp server) as a ``Backend``.

Streams ``POST {base_url}/v1/chat/completions`` with ``stream: true`` and
reads the server-sent events as they arrive. Batching is the server's job.

Retries: only failures before the first piece of text are retried
(connection refused or reset, a gateway error). Once text has been streamed a
retry would repeat it, so a dropped stream raises ``LLMError`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from llm.base import GenerationRequest, LLMBusy, LLMError, LLMTimeout, TextDelta, Usage

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({502, 503, 504})
_BUSY_STATUSES = frozenset({429})
# A paragraph of ordinary support English, to learn the server's characters per token.
_CALIBRATION_TEXT = (
    "Thanks for reaching out! To reset your password, open the sign-in page, choose "
    "'Forgot password', and follow the link we email you. The link expires after 30 minutes; "
    "if it does, request a new one. Still stuck? Reply here and a colleague will help."
)


class _StreamDropped(LLMError):
    """The connection failed after text was streamed: never retried."""


class OpenAIBackend:
    """Streams chat completions from an OpenAI-compatible HTTP server.

    ``timeout`` bounds a whole request when the request sets none itself;
    ``retries`` is how many more attempts a failure before the first token
    gets. ``count_tokens`` estimates (the protocol's method is synchronous);
    ``load()`` calibrates the estimate with the server's ``/tokenize`` when it
    has one.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str = "",
        model_name: str = "",
        timeout: float = 120.0,
        retries: int = 2,
        connect_timeout: float = 10.0,
        context_window: int = 4096,
        retry_backoff: float = 0.25,
    ) -> None:
        self._base = base_url.rstrip("/").removesuffix("/v1")
        self._api_key = api_key
        self._model = model_name
        self._timeout = timeout
        self._retries = max(0, retries)
        self._connect_timeout = connect_timeout
        self._backoff = retry_backoff
        self._session: aiohttp.ClientSession | None = None
        self._chars_per_token = 4.0
        self.context_window = context_window
        self.name = f"openai:{model_name or self._base}"

    # -- lifecycle -------------------------------------------------------------------------

    async def load(self) -> None:
        """Open the HTTP session and ask the server what it serves.

        An unreachable server is not fatal here (it may start after us): the
        first request will retry and report it.
        """
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
            )
        try:
            await self._discover()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("model server %s did not answer /v1/models yet: %r", self._base, exc)
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            await self._calibrate()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def count_tokens(self, text: str) -> int:
        return max(1, round(len(text) / self._chars_per_token))

    # -- generation ------------------------------------------------------------------------

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TextDelta]:
        session = self._session
        if session is None:
            raise LLMError("the OpenAI-compatible backend is not loaded (call load() first)")
        budget = request.timeout if request.timeout is not None else self._timeout
        deadline = asyncio.get_running_loop().time() + budget
        payload = self._payload(request)
        url = f"{self._base}/v1/chat/completions"
        attempt = 0
        while True:
            state = _StreamState()
            try:
                # aclosing: a consumer that stops early closes the HTTP response now.
                async with contextlib.aclosing(
                    self._attempt(session, url, payload, deadline, state)
                ) as texts:
                    async for text in texts:
                        yield TextDelta(text)
            except _StreamDropped:
                raise
            except TimeoutError:
                raise LLMTimeout(f"{url} did not finish within {budget}s") from None
            except _Retryable as exc:
                if state.streamed:
                    # Never retry once text went out: the answer would repeat.
                    raise LLMError(f"{url}: connection lost mid-answer ({exc.cause!r})") from exc
                if attempt >= self._retries:
                    raise LLMError(
                        f"{url} failed after {attempt + 1} attempt(s): {exc.cause!r}"
                    ) from exc
                attempt += 1
                delay = self._backoff * 2 ** (attempt - 1)
                log.warning(
                    "model server request failed before any text (%r); retry %d/%d in %.2f s",
                    exc.cause,
                    attempt,
                    self._retries,
                    delay,
                )
                if asyncio.get_running_loop().time() + delay >= deadline:
                    raise LLMTimeout(f"{url} did not answer within {budget}s") from exc
                await asyncio.sleep(delay)
                continue
            yield TextDelta("", usage=self._usage(request, state))
            return

    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        url: str,
        payload: dict[str, Any],
        deadline: float,
        state: _StreamState,
    ) -> AsyncIterator[str]:
        try:
            async with asyncio.timeout_at(deadline):
                response = await session.post(url, json=payload)
        except aiohttp.ClientConnectionError as exc:
            raise _Retryable(exc) from exc
        async with response:
            if response.status != 200:
                await self._raise_for_status(response)
            try:
                async for event in _sse_events(response, deadline):
                    if event == "[DONE]":
                        state.done = True
                        break
                    text = state.take(_parse_chunk(event))
                    if text:
                        state.streamed = True
                        yield text
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                if state.streamed:
                    raise _StreamDropped(
                        f"{url}: connection lost mid-answer ({exc!r}); the answer is incomplete"
                    ) from exc
                raise _Retryable(exc) from exc
        if not (state.done or state.finish_reason):
            message = f"{url}: the stream ended before the answer was complete"
            if state.streamed:
                raise _StreamDropped(message)
            raise _Retryable(ConnectionError(message))

    async def _raise_for_status(self, response: aiohttp.ClientResponse) -> None:
        body = (await response.text(errors="replace"))[:500]
        detail = f"{response.url} answered {response.status}: {body.strip()}"
        if response.status in _BUSY_STATUSES:
            raise LLMBusy(detail)
        if response.status in _RETRY_STATUSES:
            raise _Retryable(ConnectionError(detail))
        raise LLMError(detail)

    def _payload(self, request: GenerationRequest) -> dict[str, Any]:
        sampling = request.sampling
        payload: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if sampling.repetition_penalty != 1.0:
            # Not in OpenAI's schema: vLLM reads the first name, llama.cpp the second;
            # servers that know neither ignore them.
            payload["repetition_penalty"] = sampling.repetition_penalty
            payload["repeat_penalty"] = sampling.repetition_penalty
        return payload

    def _usage(self, request: GenerationRequest, state: _StreamState) -> Usage:
        if state.usage is not None:
            return state.usage
        # The server sent no usage: estimate. Servers stream about one token per chunk.
        prompt = sum(self.count_tokens(m.content) + 4 for m in request.messages)
        completion = max(state.chunks, self.count_tokens(state.text)) if state.text else 0
        return Usage(prompt_tokens=prompt, completion_tokens=completion)

    # -- discovery -------------------------------------------------------------------------

    async def _discover(self) -> None:
        assert self._session is not None
        async with (
            asyncio.timeout(self._connect_timeout),
            self._session.get(f"{self._base}/v1/models") as response,
        ):
            if response.status != 200:
                raise ValueError(f"/v1/models answered {response.status}")
            listing = await response.json(content_type=None)
        models = listing.get("data") or []
        if not models:
            return
        chosen = next((m for m in models if m.get("id") == self._model), None)
        if chosen is None:
            if self._model:
                log.warning(
                    "model %r is not among those %s serves: %s",
                    self._model,
                    self._base,
                    ", ".join(str(m.get("id")) for m in models),
                )
                return
            chosen = models[0]
            self._model = str(chosen.get("id", ""))
            self.name = f"openai:{self._model}"
        window = chosen.get("max_model_len") or (chosen.get("meta") or {}).get("n_ctx_train")
        if isinstance(window, int) and window > 0:
            self.context_window = window

    async def _calibrate(self) -> None:
        """Learn characters per token from the server's tokenizer, if it exposes one."""
        assert self._session is not None
        bodies: list[Mapping[str, Any]] = [
            {"model": self._model, "prompt": _CALIBRATION_TEXT},  # vLLM
            {"content": _CALIBRATION_TEXT},  # llama.cpp server
        ]
        for body in bodies:
            async with (
                asyncio.timeout(self._connect_timeout),
                self._session.post(f"{self._base}/tokenize", json=body) as response,
            ):
                if response.status != 200:
                    continue
                data = await response.json(content_type=None)
            count = data.get("count") or len(data.get("tokens") or [])
            if count:
                self._chars_per_token = len(_CALIBRATION_TEXT) / count
                log.info("model server tokenizer: %.2f characters per token", self._chars_per_token)
                return

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers


class _Retryable(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _StreamState:
    __slots__ = ("chunks", "done", "finish_reason", "parts", "streamed", "usage")

    def __init__(self) -> None:
        self.streamed = False
        self.done = False
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.chunks = 0
        self.parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def take(self, chunk: Mapping[str, Any]) -> str:
        """Record one parsed chunk; return its text."""
        usage = chunk.get("usage")
        if isinstance(usage, Mapping) and "completion_tokens" in usage:
            self.usage = Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage["completion_tokens"]),
            )
        text = ""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                text += content
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        if text:
            self.chunks += 1
            self.parts.append(text)
        return text


def _parse_chunk(data: str) -> Mapping[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise LLMError(f"model server sent an event that is not JSON: {data[:200]!r}") from None
    if not isinstance(chunk, Mapping):
        raise LLMError(f"model server sent an unexpected event: {data[:200]!r}")
    error = chunk.get("error")
    if error:
        message = error.get("message") if isinstance(error, Mapping) else error
        raise LLMError(f"model server reported an error mid-stream: {message}")
    return chunk


async def _sse_events(response: aiohttp.ClientResponse, deadline: float) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event, until the body ends.

    Every read is bounded by ``deadline`` (``TimeoutError``); the deadline is
    not held across the ``yield``, so the consumer's own awaits are not cut.
    """
    data: list[str] = []
    started = time.monotonic()
    while True:
        async with asyncio.timeout_at(deadline):
            raw = await response.content.readline()
        if not raw:
            break
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue  # a comment, used as keep-alive
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)
    log.debug("stream from %s took %.2f s", response.url, time.monotonic() - started)
