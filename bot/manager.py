"""The conversation manager: the one caller of storage and of the LLM.

Every inbound message is stored (``accept``) before it is answered
(``process``). Messages of one conversation are answered in arrival order;
different conversations run concurrently.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.commands import CommandContext, CommandRegistry, builtin_commands, parse_command
from bot.errors import DeskmateError
from bot.prompting import build_messages
from bot.text import clean
from bot.types import Accepted, ConversationRef, Inbound, MenuEntry, Render, Reply, ReplyKind
from llm.base import Backend, GenerationRequest, LLMBusy, LLMError, LLMTimeout, SamplingParams
from storage.repository import (
    ConversationAddress,
    ForgetResult,
    HistoryItem,
    InboundEvent,
    MessageKind,
    Repository,
)

if TYPE_CHECKING:
    from bot.knowledge.base import KnowledgeBase

log = logging.getLogger(__name__)

EMPTY_MESSAGE = "I can only read text. Please type your question and I'll help."
FAILED_MESSAGE = "Sorry, I couldn't answer that just now. Please try again in a moment."
TIMEOUT_MESSAGE = "Sorry, that took too long and I had to stop. Please try again in a moment."
STOPPED_MESSAGE = "(stopped)"


def busy_message(position: int | None) -> str:
    where = f" You'd be number {position} in line." if position else ""
    return (
        f"I'm helping a lot of people right now.{where} Please send your message again in a minute."
    )


@dataclass(slots=True)
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    # Set to stop the generation in progress (a /reset arrived).
    stop: asyncio.Event = field(default_factory=asyncio.Event)


class ConversationManager:
    def __init__(
        self,
        *,
        repository: Repository,
        backend: Backend,
        system_prompt: str,
        sampling: SamplingParams,
        llm_timeout: float | None,
        max_input_chars: int,
        history_messages: int,
        admins: Collection[str] = (),
        commands: CommandRegistry | None = None,
        knowledge: KnowledgeBase | None = None,
    ) -> None:
        self.repository = repository
        self.backend = backend
        self.system_prompt = system_prompt
        self.sampling = sampling
        self.llm_timeout = llm_timeout
        self.max_input_chars = max_input_chars
        self.history_messages = history_messages
        self.admins = frozenset(admins)
        self.commands = commands or builtin_commands()
        # History is re-counted for every message of a conversation; a real
        # tokenizer costs far more than a dictionary look-up.
        self._count_tokens = functools.lru_cache(maxsize=16384)(backend.count_tokens)
        # FAQ retrieval, modes and drafts; None: every message goes to the model.
        self.knowledge = knowledge
        if knowledge is not None and self.commands.get("faq") is None:
            from bot.knowledge.commands import register_knowledge_commands

            register_knowledge_commands(self.commands, knowledge)
        self._slots: dict[str, _Slot] = {}
        # Bumped whenever a conversation's stored history may have changed, so
        # history read when a message was accepted is used only while current.
        self._versions: dict[str, int] = {}
        self._epoch = 0

    # -- entry points ------------------------------------------------------------

    async def accept(self, inbound: Inbound) -> Accepted:
        """Store ``inbound`` (raises ``StorageError`` if that fails)."""
        cleaned = clean(inbound.text, max_chars=self.max_input_chars)
        command = parse_command(cleaned.text)
        kind: MessageKind = "command" if command or not cleaned.text else "chat"
        version = self._history_version(inbound.ref.key)
        stored = await self.repository.accept(
            _event(inbound, cleaned.text),
            kind=kind,
            history_limit=self.history_messages if kind == "chat" else 0,
        )
        if stored.status == "duplicate":
            log.info("redelivered %s event %s ignored", inbound.ref.platform, inbound.event_id)
        elif cleaned.truncated:
            log.info(
                "inbound %s truncated from %d characters",
                stored.inbound_id,
                cleaned.original_length,
            )
        return Accepted(
            inbound=inbound,
            inbound_id=stored.inbound_id,
            duplicate=stored.status == "duplicate",
            stored=stored,
            text=cleaned.text,
            truncated=cleaned.truncated,
            command=command,
            history_version=version,
        )

    async def handle(self, inbound: Inbound, render: Render) -> Reply:
        return await self.process(await self.accept(inbound), render)

    async def process(self, accepted: Accepted, render: Render) -> Reply:
        """Answer an accepted message, rendering the reply as it streams.

        ``render`` receives the reply and should iterate it; whatever it leaves
        unread is drained here so the stored answer is always complete.
        """
        if accepted.duplicate:
            return Reply(ReplyKind.DUPLICATE, inbound_id=accepted.inbound_id)
        key = accepted.inbound.ref.key
        if accepted.command and accepted.command[0] == "reset":
            # /reset must not wait behind the answer it is meant to interrupt.
            slot = self._slots.get(key)
            if slot is not None:
                slot.stop.set()
        slot = self._slots.setdefault(key, _Slot())
        slot.users += 1
        try:
            async with slot.lock:
                slot.stop.clear()
                try:
                    return await self._process(accepted, render, slot)
                finally:
                    self._versions[key] = self._versions.get(key, 0) + 1
        finally:
            slot.users -= 1
            if slot.users == 0:
                self._slots.pop(key, None)

    async def pending(self, platform: str) -> list[Accepted]:
        """Stored events of ``platform`` that were never answered, claimed for answering."""
        found = await self.repository.pending(platform)
        return [
            Accepted(
                inbound=_inbound(p.event),
                inbound_id=p.stored.inbound_id,
                duplicate=False,
                stored=p.stored,
                text=p.event.text,
                truncated=False,
                command=parse_command(p.event.text),
            )
            for p in found
        ]

    async def set_active(self, ref: ConversationRef, active: bool) -> None:
        await self.repository.set_active(_address(ref), active)

    async def move_conversation(self, old: ConversationRef, new: ConversationRef) -> None:
        await self.repository.move_conversation(_address(old), _address(new))
        self._epoch += 1

    async def forget_user(self, platform_user: str) -> ForgetResult:
        """Delete a person's messages (in every conversation) and the answers to them."""
        result = await self.repository.forget_user(platform_user)
        self._epoch += 1
        return result

    def _history_version(self, key: str) -> tuple[int, int]:
        return (self._epoch, self._versions.get(key, 0))

    async def reset(self, conversation_id: int) -> int:
        """Forget a conversation's history; returns how many messages went."""
        return await self.repository.reset_conversation(conversation_id)

    def menu(self) -> list[MenuEntry]:
        return [
            MenuEntry(c.name, c.description) for c in self.commands.visible() if not c.admin_only
        ]

    def is_admin(self, inbound: Inbound) -> bool:
        return inbound.platform_user in self.admins

    # -- routing -----------------------------------------------------------------

    async def _process(self, accepted: Accepted, render: Render, slot: _Slot) -> Reply:
        if accepted.command is not None:
            text = await self._run_command(accepted, *accepted.command)
            reply = Reply(ReplyKind.COMMAND, text=text, inbound_id=accepted.inbound_id)
            return await self._deliver(accepted, reply, render, kind="command")
        if not accepted.text:
            reply = Reply(ReplyKind.NOTICE, text=EMPTY_MESSAGE, inbound_id=accepted.inbound_id)
            return await self._deliver(accepted, reply, render, kind="command")
        return await self._answer(accepted, render, slot)

    async def _run_command(self, accepted: Accepted, name: str, args: str) -> str:
        command = self.commands.get(name)
        if command is None:
            return f"I don't know the command /{name}. Send /help to see what I can do."
        is_admin = self.is_admin(accepted.inbound)
        if command.admin_only and not is_admin:
            log.warning("refused /%s to non-admin %s", name, accepted.inbound.platform_user)
            return f"Sorry, /{name} is only for this bot's admins."
        ctx = CommandContext(accepted.inbound, accepted.stored, args, is_admin, self)
        try:
            return await command.handler(ctx)
        except DeskmateError as exc:
            log.exception("command /%s failed", name)
            return exc.user_message

    async def _deliver(
        self, accepted: Accepted, reply: Reply, render: Render, *, kind: MessageKind
    ) -> Reply:
        try:
            await render(reply)
        except BaseException as exc:
            await self._fail(accepted, f"delivery failed: {exc!r}")
            raise
        await self.repository.record_answer(
            accepted.stored, text=reply.text, kind=kind, latency_ms=self._elapsed_ms(accepted)
        )
        return reply

    async def _answer(self, accepted: Accepted, render: Render, slot: _Slot) -> Reply:
        system_prompt = self.system_prompt
        if self.knowledge is not None:
            text = await self._knowledge_reply(accepted)
            if text is not None:
                reply = Reply(ReplyKind.ANSWER, text=text, inbound_id=accepted.inbound_id)
                return await self._deliver(accepted, reply, render, kind="chat")
            system_prompt = await self._persona(accepted) or system_prompt
        history: Sequence[HistoryItem] | None = accepted.stored.history
        if history is None or accepted.history_version != self._history_version(
            accepted.inbound.ref.key
        ):
            history = await self.repository.history(
                accepted.stored.conversation_id,
                upto_message_id=accepted.stored.message_id,
                limit=self.history_messages,
            )
        budget = self.backend.context_window - self.sampling.max_new_tokens
        messages = build_messages(
            system_prompt=system_prompt,
            history=history,
            budget=budget,
            count_tokens=self._count_tokens,
        )
        request = GenerationRequest(
            messages=messages,
            sampling=self.sampling,
            timeout=self.llm_timeout,
            tag=f"inbound:{accepted.inbound_id}",
        )
        outcome = _Outcome()
        reply = Reply(
            ReplyKind.ANSWER,
            self._generate(accepted, request, outcome, slot.stop),
            inbound_id=accepted.inbound_id,
        )
        try:
            await render(reply)
            await reply.collect()
        except BaseException as exc:
            await self._fail(accepted, f"delivery failed: {exc!r}")
            raise
        if outcome.error is not None:
            reply.failed = True
            await self._fail(accepted, outcome.error)
            return reply
        answer = outcome.text.strip()
        await self.repository.record_answer(
            accepted.stored,
            text=answer if not outcome.stopped else answer + " " + STOPPED_MESSAGE,
            kind="chat",
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            latency_ms=self._elapsed_ms(accepted),
        )
        return reply

    async def _knowledge_reply(self, accepted: Accepted) -> str | None:
        from bot.knowledge.routing import knowledge_reply

        assert self.knowledge is not None
        try:
            return await knowledge_reply(
                self.knowledge,
                accepted.inbound,
                accepted.text,
                backend=self.backend,
                llm_timeout=self.llm_timeout,
            )
        except Exception:
            # The knowledge base failing must not silence the bot: chat instead.
            log.exception("inbound %s: knowledge base failed", accepted.inbound_id)
            return None

    async def _persona(self, accepted: Accepted) -> str:
        """The tenant's persona set with /persona: its system prompt for plain chat."""
        assert self.knowledge is not None
        try:
            return (await self.knowledge.persona(accepted.inbound.ref.tenant)).strip()
        except Exception:
            log.exception("inbound %s: could not read the persona", accepted.inbound_id)
            return ""

    async def _generate(
        self,
        accepted: Accepted,
        request: GenerationRequest,
        outcome: _Outcome,
        stop: asyncio.Event,
    ) -> AsyncIterator[str]:
        if accepted.truncated:
            yield (
                f"(Your message was very long, so I read only its first "
                f"{self.max_input_chars:,} characters.)\n\n"
            )
        parts: list[str] = []
        stream = self.backend.stream(request)
        try:
            async with asyncio.timeout(request.timeout):
                async for delta in stream:
                    if delta.usage is not None:
                        outcome.prompt_tokens = delta.usage.prompt_tokens
                        outcome.completion_tokens = delta.usage.completion_tokens
                    if delta.text:
                        parts.append(delta.text)
                        # Leading whitespace is the model's, not the customer's concern.
                        text = delta.text.lstrip() if len(parts) == 1 else delta.text
                        if text:
                            yield text
                    if stop.is_set():
                        outcome.stopped = True
                        yield " " + STOPPED_MESSAGE
                        break
        except (TimeoutError, LLMTimeout) as exc:
            outcome.error = f"LLM timeout after {request.timeout}s: {exc}"
            log.warning("inbound %s: %s", accepted.inbound_id, outcome.error)
            yield ("\n\n" if parts else "") + TIMEOUT_MESSAGE
        except LLMBusy as exc:
            outcome.error = f"LLM busy: {exc}"
            log.warning("inbound %s: %s", accepted.inbound_id, outcome.error)
            yield busy_message(exc.position)
        except LLMError as exc:
            outcome.error = f"LLM failed: {exc}"
            log.error("inbound %s: %s", accepted.inbound_id, outcome.error, exc_info=exc)
            yield ("\n\n" if parts else "") + FAILED_MESSAGE
        except Exception as exc:
            # A bug in a backend must not take the adapter down with it.
            outcome.error = f"LLM crashed: {exc!r}"
            log.exception("inbound %s: backend raised", accepted.inbound_id)
            yield ("\n\n" if parts else "") + FAILED_MESSAGE
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()
        outcome.text = "".join(parts)

    async def _fail(self, accepted: Accepted, error: str) -> None:
        try:
            await self.repository.mark_failed(accepted.inbound_id, error)
        except Exception:
            # The user has their answer; a bookkeeping failure only costs a retry.
            log.exception("could not mark inbound %s failed", accepted.inbound_id)

    @staticmethod
    def _elapsed_ms(accepted: Accepted) -> int:
        return int((time.monotonic() - accepted.received) * 1000)


@dataclass(slots=True)
class _Outcome:
    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    stopped: bool = False


def _address(ref: ConversationRef) -> ConversationAddress:
    return ConversationAddress(ref.platform, ref.tenant, ref.chat, ref.thread)


def _event(inbound: Inbound, text: str) -> InboundEvent:
    return InboundEvent(
        conversation=_address(inbound.ref),
        event_id=inbound.event_id,
        user_id=inbound.platform_user,
        text=text,
        user_name=inbound.user_name,
        meta=inbound.meta,
    )


def _inbound(event: InboundEvent) -> Inbound:
    where = event.conversation
    ref = ConversationRef(where.platform, where.tenant, where.chat, where.thread)
    # Stored ids are Inbound.platform_user: "<platform>:<user>".
    user = event.user_id.removeprefix(f"{where.platform}:")
    return Inbound(
        ref=ref,
        user=user,
        text=event.text,
        event_id=event.event_id,
        user_name=event.user_name,
        meta=event.meta,
    )
