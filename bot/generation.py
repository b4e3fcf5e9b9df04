"""The one generation path: every text the model writes streams through here.

``model_text`` streams the model's text, stops when ``/reset`` arrives,
notes the tokens and model time, keeps the circuit breaker informed, and
turns every LLM failure into what the user is told (``bot.errors``);
nothing is raised. Every request carries the output guard's canary, and
every text passes the guard (``bot.guard``) before it is yielded: an answer
that leaks the prompt, a secret or another group member's personal data is
withheld, and the safe text that replaces it takes back what was shown.
The chunk functions shape one plan's answer around it: plain chat, a
grounded answer behind its citation guard, a draft.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from bot.errors import StorageError, user_message
from bot.guard import OutputGuard, Verdict, Watch, foreign_data
from bot.knowledge import drafting
from bot.knowledge.policy import GroundedGate
from bot.messages import say
from bot.metrics import Metrics
from bot.plans import Chat, Grounded, KnowledgePlan, ReviseDraft, Translate
from bot.prompting import build_messages, with_canary
from bot.team.service import Team
from bot.throttle import CircuitBreaker
from bot.turns import Turns
from bot.types import Accepted, Retraction
from llm.base import (
    Backend,
    ChatMessage,
    GenerationRequest,
    LLMBusy,
    LLMError,
    LLMTimeout,
    SamplingParams,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Generation:
    """One model answer in progress: what the model wrote, its usage, and how it
    ended (an error with the user's notice, or stopped by ``/reset``)."""

    request: GenerationRequest
    parts: list[str] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # Model time the backend reported, and the stream's wall time.
    model_seconds: float | None = None
    wall_seconds: float = 0.0
    error: str | None = None
    stopped: bool = False
    # Why the output guard withheld the answer (None: it did not).
    withheld: Verdict | None = None
    # How a grounded answer ended up being answered (itself, or its fallback).
    settled: KnowledgePlan | None = None
    _notice: str = ""
    _separate: bool = True

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def fail(self, error: str, notice: str, *, separate: bool = True) -> None:
        self.error, self._notice, self._separate = error, notice, separate

    def notice(self, *, after_text: bool) -> str:
        """What the user is told about the failure, set apart from text already
        shown; a withheld answer's notice takes back all of it."""
        if self.withheld is not None:
            return Retraction(self._notice)
        return ("\n\n" if after_text and self._separate else "") + self._notice


class GenerationPath:
    """Requests to the model, the stream itself, and what an answer cost."""

    def __init__(
        self,
        *,
        backend: Backend,
        breaker: CircuitBreaker,
        turns: Turns,
        team: Team,
        metrics: Metrics,
        system_prompt: str,
        sampling: SamplingParams,
        llm_timeout: float | None,
        guard: OutputGuard | None = None,
    ) -> None:
        self.backend = backend
        self.guard = guard or OutputGuard()
        self.breaker = breaker
        self.turns = turns
        self.team = team
        self.metrics = metrics
        self.system_prompt = system_prompt
        self.sampling = sampling
        self.llm_timeout = llm_timeout
        # History is re-counted for every message of a conversation; a real
        # tokenizer costs far more than a dictionary look-up.
        self._count_tokens = functools.lru_cache(maxsize=16384)(backend.count_tokens)

    # -- requests ------------------------------------------------------------------

    def request(
        self, accepted: Accepted, messages: Sequence[ChatMessage], sampling: SamplingParams
    ) -> GenerationRequest:
        """A request for ``accepted``'s answer from prepared ``messages``."""
        tag = f"inbound:{accepted.inbound_id}"
        messages = with_canary(messages, self.guard.marker)
        return GenerationRequest(messages, sampling, self.llm_timeout, tag)

    async def chat_request(self, accepted: Accepted, plan: Chat) -> GenerationRequest:
        """Plain chat: the system prompt (or the tenant's persona) and the
        conversation's history, cut to fit the model's context."""
        messages = build_messages(
            system_prompt=plan.system_prompt or self.system_prompt,
            history=await self.turns.history(accepted),
            # The guard's canary joins the system prompt afterwards (``request``).
            budget=self.backend.context_window
            - self.sampling.max_new_tokens
            - self._count_tokens(self.guard.marker),
            count_tokens=self._count_tokens,
            # Chat is over the conversation's own words, which the model
            # answers in English unless told otherwise; an English answer
            # needs no instruction (and the history keeps its tokens).
            language="" if accepted.language == "en" else accepted.language,
        )
        return self.request(accepted, messages, self.sampling)

    # -- the stream ----------------------------------------------------------------

    async def model_text(
        self, accepted: Accepted, generation: Generation, stop: asyncio.Event
    ) -> AsyncIterator[str]:
        """The one generation path: the model's text as it streams.

        Usage, a failure (with what the user is told) and a ``/reset`` that
        stopped it are noted on ``generation``; nothing is raised.
        """
        request = generation.request
        if not self.breaker.allow():
            # The model failed the last requests in a row: fail at once rather
            # than make every customer wait out the timeout in turn.
            generation.fail(
                "LLM circuit open after repeated failures",
                say("conversation.failed", accepted.language),
            )
            log.warning("inbound %s: %s", accepted.inbound_id, generation.error)
            return
        # What the model may not repeat: its instructions, never the
        # customer's words or the passages it is asked to quote.
        watch = self.guard.watch(
            [m.content for m in request.messages if m.role == "system"],
            await self._foreign_data(accepted),
        )
        stream = self.backend.stream(request)
        started = time.monotonic()
        try:
            async with asyncio.timeout(request.timeout):
                async for delta in stream:
                    if delta.usage is not None:
                        generation.prompt_tokens = delta.usage.prompt_tokens
                        generation.completion_tokens = delta.usage.completion_tokens
                        generation.model_seconds = delta.usage.model_seconds
                    if delta.text:
                        if shown := self._shown(generation, watch, watch.feed(delta.text)):
                            yield shown
                        if watch.verdict is not None:
                            break
                    if stop.is_set():
                        generation.stopped = True
                        break
        except (TimeoutError, LLMTimeout) as exc:
            self.breaker.failed()
            generation.fail(
                f"LLM timeout after {request.timeout}s: {exc}", user_message(exc, accepted.language)
            )
            log.warning("inbound %s: %s", accepted.inbound_id, generation.error)
        except LLMBusy as exc:
            self.breaker.inconclusive()  # a full queue says nothing about the model's health
            generation.fail(
                f"LLM busy: {exc}", user_message(exc, accepted.language), separate=False
            )
            log.warning("inbound %s: %s", accepted.inbound_id, generation.error)
        except LLMError as exc:
            self.breaker.failed()
            generation.fail(f"LLM failed: {exc}", user_message(exc, accepted.language))
            log.error("inbound %s: %s", accepted.inbound_id, generation.error, exc_info=exc)
        except Exception as exc:
            # A bug in a backend must not take the adapter down with it.
            self.breaker.failed()
            generation.fail(f"LLM crashed: {exc!r}", say("conversation.failed", accepted.language))
            log.exception("inbound %s: backend raised", accepted.inbound_id)
        else:
            self.breaker.succeeded()
        finally:
            generation.wall_seconds = time.monotonic() - started
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()
        if shown := self._shown(generation, watch, watch.finish()):
            yield shown
        if watch.verdict is not None:
            self._withhold(accepted, generation, watch.verdict)

    async def _foreign_data(self, accepted: Accepted) -> dict[str, str]:
        """In a group, the personal data other members wrote in its history:
        not for the model to hand to this one."""
        if not accepted.inbound.in_group:
            return {}
        try:
            history = await self.turns.history(accepted)
        except StorageError:
            log.exception("inbound %s: could not read the history to guard", accepted.inbound_id)
            return {}
        asker = accepted.inbound.platform_user
        return foreign_data(((item.author, item.text) for item in history), asker)

    def _shown(self, generation: Generation, watch: Watch, text: str) -> str:
        """Note ``text`` as the answer's (only released text is ever kept)."""
        if not generation.parts:
            # Leading whitespace is the model's, not the customer's concern.
            text = text.lstrip()
        if text:
            generation.parts.append(text)
        return text

    def _withhold(self, accepted: Accepted, generation: Generation, verdict: Verdict) -> None:
        """The guard stopped the answer: the customer gets the safe text, the
        event its failure, the operator the reason (never the text itself)."""
        generation.withheld = verdict
        generation.stopped = False
        generation.fail(f"output guard: {verdict}", say("conversation.withheld", accepted.language))
        self.metrics.guarded.labels(verdict.kind).inc()
        log.warning(
            "inbound %s: answer withheld by the output guard: %s", accepted.inbound_id, verdict
        )

    # -- one plan's answer around the stream ---------------------------------------

    async def chat_chunks(
        self, accepted: Accepted, generation: Generation, stop: asyncio.Event
    ) -> AsyncIterator[str]:
        if accepted.truncated:
            yield say("conversation.truncated", accepted.language, chars=self.turns.max_input_chars)
        async for text in self.model_text(accepted, generation, stop):
            yield text
        if generation.stopped:
            yield " " + say("conversation.stopped", accepted.language)
        elif generation.error is not None:
            yield generation.notice(after_text=bool(generation.text))

    async def grounded_chunks(
        self, accepted: Accepted, plan: Grounded, generation: Generation, stop: asyncio.Event
    ) -> AsyncIterator[str]:
        gate = GroundedGate(plan.question, plan.decision.hits)
        async for text in self.model_text(accepted, generation, stop):
            if shown := gate.feed(text):
                yield shown
        if generation.error is not None:
            yield generation.notice(after_text=bool(gate.shown))
            return
        if generation.stopped:
            yield (" " if gate.shown else "") + say("conversation.stopped", accepted.language)
            return
        if rest := gate.finish():
            yield rest
        if gate.shown:
            yield "\n\n" + plan.sources
            generation.settled = plan
            return
        log.info("inbound %s: grounded answer discarded: %s", accepted.inbound_id, gate.verdict)
        generation.settled = plan.fallback
        yield plan.fallback.text

    async def draft_chunks(
        self, accepted: Accepted, plan: ReviseDraft, generation: Generation, stop: asyncio.Event
    ) -> AsyncIterator[str]:
        shown = False
        async for text in self.model_text(accepted, generation, stop):
            if not shown:
                shown = True
                yield drafting.heading(plan.draft)
            yield text
        if generation.stopped:
            yield " " + say("conversation.stopped", accepted.language)
        elif generation.error is not None:
            yield generation.notice(after_text=shown)
        elif not generation.text.strip():
            yield say("knowledge.draft.empty", accepted.language)

    async def translation_chunks(
        self, accepted: Accepted, plan: Translate, generation: Generation, stop: asyncio.Event
    ) -> AsyncIterator[str]:
        yield plan.heading
        async for text in self.model_text(accepted, generation, stop):
            yield text
        if generation.stopped:
            yield " " + say("conversation.stopped", accepted.language)
        elif generation.error is not None:
            yield generation.notice(after_text=True)
        elif not generation.text.strip():
            yield say("translate.empty", accepted.language)

    # -- what it cost --------------------------------------------------------------

    async def record_usage(self, accepted: Accepted, plan: str, generation: Generation) -> None:
        """What the answer cost, for the metrics, quotas and /stats: tokens and
        model time (the backend's own figure when it gives one, else the
        stream's wall time). ``plan``: chat, grounded or draft."""
        for kind, count in (
            ("prompt", generation.prompt_tokens),
            ("completion", generation.completion_tokens),
        ):
            if count:
                self.metrics.tokens.labels(kind).inc(count)
        reported = generation.model_seconds
        try:
            await self.team.repository.record_usage(
                tenant=accepted.inbound.ref.tenant,
                user_id=accepted.inbound.platform_user,
                inbound_id=accepted.inbound_id,
                plan=plan,
                prompt_tokens=generation.prompt_tokens or 0,
                completion_tokens=generation.completion_tokens or 0,
                model_seconds=generation.wall_seconds if reported is None else reported,
                seconds_source="wall" if reported is None else "backend",
            )
        except StorageError:
            log.exception("inbound %s: could not record model usage", accepted.inbound_id)
