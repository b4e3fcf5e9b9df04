"""A scripted backend for tests of the layers above the LLM.

Queue answers with ``enqueue``; with nothing queued it echoes the last user
message, so a test that does not care what is said still gets a reply.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from llm.base import ChatMessage, GenerationRequest, LLMError, LLMTimeout, TextDelta, Usage


@dataclass(slots=True)
class _Script:
    text: str | None
    error: BaseException | None
    chunk_delay: float


class FakeBackend:
    """Streams scripted text word by word. Records every request it saw."""

    name = "fake"

    def __init__(self, *, context_window: int = 2048, chunk_delay: float = 0.0) -> None:
        self.context_window = context_window
        self.chunk_delay = chunk_delay
        self.requests: list[GenerationRequest] = []
        self.loaded = False
        self.closed = False
        self._script: deque[_Script] = deque()

    def enqueue(
        self,
        text: str | None = None,
        *,
        error: BaseException | None = None,
        chunk_delay: float | None = None,
    ) -> None:
        """Script the next answer: ``text`` to stream, or ``error`` to raise."""
        delay = self.chunk_delay if chunk_delay is None else chunk_delay
        self._script.append(_Script(text, error, delay))

    async def load(self) -> None:
        self.loaded = True

    async def aclose(self) -> None:
        self.closed = True

    def count_tokens(self, text: str) -> int:
        # Roughly four characters a token, like English BPE vocabularies.
        return max(1, (len(text) + 3) // 4)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TextDelta]:
        self.requests.append(request)
        script = self._script.popleft() if self._script else _Script(None, None, self.chunk_delay)
        try:
            async with asyncio.timeout(request.timeout):
                async for delta in self._play(request.messages, script):
                    yield delta
        except TimeoutError as exc:
            raise LLMTimeout(f"fake backend timed out after {request.timeout}s") from exc

    async def _play(
        self, messages: Sequence[ChatMessage], script: _Script
    ) -> AsyncIterator[TextDelta]:
        if script.error is not None:
            if script.chunk_delay:
                await asyncio.sleep(script.chunk_delay)
            raise script.error
        text = script.text
        if text is None:
            last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
            text = f"echo: {last_user}"
        words = text.split(" ")
        for i, word in enumerate(words):
            if script.chunk_delay:
                await asyncio.sleep(script.chunk_delay)
            yield TextDelta(word if i == 0 else " " + word)
        prompt = sum(self.count_tokens(m.content) for m in messages)
        yield TextDelta("", usage=Usage(prompt_tokens=prompt, completion_tokens=len(words)))


__all__ = ["FakeBackend", "LLMError"]
