"""The conversation manager: where every message is stored, routed and answered.

Every inbound message is stored (``accept``) before it is answered
(``process``). Messages of one conversation are answered in arrival order;
different conversations run concurrently.

Routing: a command runs its handler; any other message gets a plan from the
knowledge base (``bot.plans``) — or plain chat without one — and
``_execute`` carries it out. Every model answer, whatever the plan, goes
through ``_model_text``: it streams, stops on ``/reset``, records its tokens,
and turns LLM failures into the same messages for the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field

from bot.commands import (
    CommandContext,
    CommandRegistry,
    builtin_commands,
    parse_command,
    refusal,
)
from bot.errors import (
    CONFIG_ERRORS,
    FAILURES,
    STORAGE_MESSAGE,
    ConfigError,
    StorageError,
    user_message,
)
from bot.handoff.config import SupportSpace
from bot.handoff.desk import AGENT_COMMANDS, AGENT_HELP, NO_TEAM, HelpDesk
from bot.handoff.intent import wants_human
from bot.knowledge import drafting
from bot.knowledge.commands import register_knowledge_commands
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.passages import Passage
from bot.knowledge.policy import NO_RELIABLE_ANSWER, GroundedGate
from bot.metrics import Metrics
from bot.plans import (
    Chat,
    Clarify,
    Escalate,
    Grounded,
    HandOff,
    KnowledgePlan,
    Plan,
    ReviseDraft,
    Verbatim,
)
from bot.prompting import build_messages
from bot.team.access import Access
from bot.team.commands import register_team_commands
from bot.team.service import (
    INVITATION,
    QUOTA_NOTICE,
    RATING_BUTTONS,
    Team,
    looks_like_rating,
)
from bot.text import clean
from bot.throttle import CircuitBreaker, TokenBuckets
from bot.types import Accepted, ConversationRef, Inbound, MenuEntry, Render, Reply, ReplyKind
from llm.base import (
    Backend,
    ChatMessage,
    GenerationRequest,
    LLMBusy,
    LLMError,
    LLMTimeout,
    SamplingParams,
)
from storage.repository import (
    ConversationAddress,
    ForgetResult,
    HistoryItem,
    InboundEvent,
    MessageKind,
    Repository,
    Stats,
)
from storage.team_repo import TeamRepository

log = logging.getLogger(__name__)

EMPTY_MESSAGE = "I can only read text. Please type your question and I'll help."
FAILED_MESSAGE = "Sorry, I couldn't answer that just now. Please try again in a moment."
TIMEOUT_MESSAGE = "Sorry, that took too long and I had to stop. Please try again in a moment."
STOPPED_MESSAGE = "(stopped)"
# The message stays stored and is answered once the records are back, so the
# customer is not asked to send it again (that would earn them two answers).
STORAGE_DELAY_MESSAGE = (
    "Sorry, I can't reach my records just now. I'll answer this as soon as they're back."
)
# How long a delivered answer's bookkeeping is retried before giving up on it.
RECORD_RETRY_FOR = 600.0
_RECORD_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
# A ticket's case summary must not keep the customer waiting long.
SUMMARY_TIMEOUT = 20.0
SUMMARY_SAMPLING = SamplingParams(max_new_tokens=120, temperature=0.0)


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
        desk: HelpDesk | None = None,
        team: Team | None = None,
        metrics: Metrics | None = None,
        user_rate: int = 0,
        breaker: CircuitBreaker | None = None,
        memory: int = 10_000,
        heartbeat: float | None = None,
        record_retry_for: float = RECORD_RETRY_FOR,
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
            register_knowledge_commands(self.commands, knowledge)
        # Roles per tenant, audit trail, quotas, ratings, learned answers.
        self.team = team or Team(TeamRepository(repository.db), owners=self.admins)
        if self.team.knowledge is None:
            self.team.knowledge = knowledge
        if self.commands.get("role") is None:
            register_team_commands(self.commands)
        # The support team's tickets; None or unconnected: /human says no team is there.
        self.desk = desk
        if desk is not None and desk.team is None:
            desk.team = self.team
        self.metrics = metrics or Metrics()
        # Messages a minute one person may send before they are asked to wait (0: no limit).
        self._user_rate = TokenBuckets(rate=user_rate, capacity=memory) if user_rate else None
        self._told_to_wait: dict[str, float] = {}
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self._slots: dict[str, _Slot] = {}
        # Bumped whenever a conversation's stored history may have changed, so
        # history read when a message was accepted is used only while current.
        # Bounded: forgetting a conversation bumps the epoch, which only costs
        # a history read for messages accepted before.
        self._versions: OrderedDict[str, int] = OrderedDict()
        self._memory = memory
        self._epoch = 0
        # Claims are renewed several times within their lease, so one late
        # renewal does not hand a live answer to another process.
        lease = repository.claim_lease.total_seconds()
        self.heartbeat = heartbeat if heartbeat is not None else max(0.05, lease / 6)
        self.record_retry_for = record_retry_for
        self._keeper: asyncio.Task[None] | None = None
        # Platforms whose adapters sweep for pending events (answer later, in
        # the background). The others answer in the request that brought the
        # message (web chat, terminal): their messages never queue, and a
        # failed answer there cannot be given later.
        self._swept: set[str] = set()

    # -- background upkeep --------------------------------------------------------

    def start(self) -> None:
        """Start renewing this process's claims and leases (idempotent)."""
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep(), name="deskmate-claims")

    async def aclose(self) -> None:
        """Stop renewing, and release the leases (the next process need not wait)."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        try:
            await self.repository.release_leases()
        except StorageError:
            log.warning("could not release leases; they lapse on their own")

    async def _keep(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self.repository.renew_claims()
            except StorageError as exc:
                if not failing:
                    log.error("could not renew claims on inbound events: %s", exc)
                failing = True
            except Exception:
                log.exception("renewing claims failed")
            else:
                if failing:
                    log.info("claims on inbound events renewed again")
                failing = False

    async def take_lease(self, name: str, *, purpose: str, wait: float | None = None) -> None:
        """Hold ``name`` for as long as this process runs, or raise ``ConfigError``.

        A lease left by a process that was killed lapses within the claim
        lease; until ``wait`` (that long by default) it is waited for.
        """
        lease = self.repository.claim_lease.total_seconds()
        deadline = time.monotonic() + (wait if wait is not None else lease + self.heartbeat)
        told = False
        while True:
            holder = await self.repository.take_lease(name)
            if holder is None:
                self.start()
                return
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"{purpose} is already done by another Deskmate process ({holder}). "
                    "Stop that one, or run every process with a webhook instead."
                )
            if not told:
                log.warning(
                    "%s: waiting for %s to let go (a stopped process lets go within %.0f s)",
                    purpose,
                    holder,
                    lease,
                )
                told = True
            await asyncio.sleep(min(1.0, self.heartbeat))

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
            in_turn=inbound.ref.platform in self._swept,
        )
        self.metrics.events.labels(
            inbound.ref.platform, "duplicate" if stored.status == "duplicate" else "received"
        ).inc()
        if stored.status == "duplicate":
            log.info("redelivered %s event %s ignored", inbound.ref.platform, inbound.event_id)
        elif stored.status == "queued":
            # Answered by whichever process sweeps it up once the conversation's
            # earlier message is answered.
            log.info("inbound %s waits for the conversation's turn", stored.inbound_id)
        elif cleaned.truncated:
            log.info(
                "inbound %s truncated from %d characters",
                stored.inbound_id,
                cleaned.original_length,
            )
        return Accepted(
            inbound=inbound,
            inbound_id=stored.inbound_id,
            duplicate=stored.status in ("duplicate", "queued"),
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
        try:
            await self._after_older(accepted)
            self.repository.started(accepted.inbound_id)
            return await self._in_turn(accepted, render)
        finally:
            # However it ended, this process is done with it: a claim left
            # unsettled (cancelled, crashed) lapses and the sweep takes it.
            self.repository.release(accepted.inbound_id)

    async def _after_older(self, accepted: Accepted, within: float = 5.0) -> None:
        """Let older events of the conversation that this process claimed but
        has not begun answering (a replay still being handed out) go first."""
        deadline = time.monotonic() + within
        conversation_id = accepted.stored.conversation_id
        while self.repository.claimed_before(conversation_id, accepted.inbound_id):
            if time.monotonic() >= deadline:
                log.warning(
                    "inbound %s: older messages never began; going ahead", accepted.inbound_id
                )
                return
            await asyncio.sleep(0.05)

    async def _in_turn(self, accepted: Accepted, render: Render) -> Reply:
        key = accepted.inbound.ref.key
        if accepted.command and accepted.command[0] == "reset":
            # /reset must not wait behind the answer it is meant to interrupt.
            slot = self._slots.get(key)
            if slot is not None:
                slot.stop.set()
        slot = self._slots.setdefault(key, _Slot())
        slot.users += 1
        platform = accepted.inbound.ref.platform
        outcome = "failed"
        try:
            async with slot.lock:
                slot.stop.clear()
                try:
                    delivered = _Delivered(render)
                    try:
                        reply = await self._process(accepted, delivered, slot)
                    except StorageError as exc:
                        reply = await self._storage_failed(accepted, delivered, exc)
                    outcome = "failed" if reply.failed else "answered"
                    return reply
                finally:
                    self._bump(key)
                    self.metrics.events.labels(platform, outcome).inc()
                    if outcome == "answered":
                        self.metrics.latency.labels(platform).observe(
                            time.monotonic() - accepted.received
                        )
        finally:
            slot.users -= 1
            if slot.users == 0:
                self._slots.pop(key, None)

    async def pending(self, platform: str) -> list[Accepted]:
        """Stored events of ``platform`` whose turn it is and that nobody answers
        (never answered, due for a retry, left by a stopped process), claimed
        for answering."""
        return await self.pending_of_tenant(platform, None)

    async def pending_of_tenant(self, platform: str, tenant: str | None) -> list[Accepted]:
        """``pending``, only of ``tenant`` (another bot's events are left to it)."""
        self._swept.add(platform)
        found = await self.repository.pending(platform, tenant=tenant)
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
        if self.desk is not None:
            await self.desk.tickets.forget(platform_user)
        await self.team.repository.forget(platform_user)
        self._epoch += 1
        return result

    def _bump(self, key: str) -> None:
        self._versions[key] = self._versions.get(key, 0) + 1
        self._versions.move_to_end(key)
        if len(self._versions) > self._memory:
            self._versions.popitem(last=False)
            self._epoch += 1

    def _history_version(self, key: str) -> tuple[int, int]:
        return (self._epoch, self._versions.get(key, 0))

    async def reset(self, conversation_id: int) -> int:
        """Forget a conversation's history; returns how many messages went."""
        return await self.repository.reset_conversation(conversation_id)

    async def clear_draft(self, conversation_key: str) -> None:
        if self.knowledge is not None:
            await self.knowledge.set_draft(conversation_key, None)

    async def stats(self) -> Stats:
        return await self.repository.stats()

    async def role_of(self, platform_user: str) -> str | None:
        return await self.repository.role_of(platform_user)

    def menu(self) -> list[MenuEntry]:
        return [MenuEntry(c.name, c.description) for c in self.commands.visible(Access.EVERYONE)]

    def listens_to(self, ref: ConversationRef) -> bool:
        desk = self.desk
        return (
            desk is not None
            and desk.settings.space_of(ref.platform, ref.tenant, ref.chat) is not None
        )

    def is_admin(self, inbound: Inbound) -> bool:
        """An owner: one of ``DESKMATE_ADMINS``, an admin of every tenant."""
        return inbound.platform_user in self.admins

    # -- routing -----------------------------------------------------------------

    async def _process(self, accepted: Accepted, render: Render, slot: _Slot) -> Reply:
        desk = self.desk
        if desk is not None and desk.connected:
            space = desk.space_of(accepted.inbound)
            if space is not None:
                return await self._in_support_space(accepted, render, slot, space)
            ticket = await desk.open_ticket_of(accepted.stored.conversation_id)
            if ticket is not None and not _own_command(accepted):
                # A person has this conversation: the model is not asked at all.
                await desk.from_customer(accepted, ticket)
                return await self._handled(accepted)
        if accepted.command is not None:
            result = await self._run_command(accepted, *accepted.command)
            if isinstance(result, str):
                reply = Reply(ReplyKind.COMMAND, text=result, inbound_id=accepted.inbound_id)
                return await self._deliver(accepted, reply, render, kind="command")
            return await self._execute(accepted, result, render, slot, kind="command")
        if not accepted.text:
            reply = Reply(ReplyKind.NOTICE, text=EMPTY_MESSAGE, inbound_id=accepted.inbound_id)
            return await self._deliver(accepted, reply, render, kind="command")
        if looks_like_rating(accepted.text):
            rated = await self.team.rate(
                accepted.inbound, accepted.stored.conversation_id, accepted.text, invited=True
            )
            if rated is not None:
                reply = Reply(ReplyKind.COMMAND, text=rated, inbound_id=accepted.inbound_id)
                return await self._deliver(accepted, reply, render, kind="command")
        wait = self._too_fast(accepted.inbound)
        if wait is not None:
            if not wait:
                return await self._handled(accepted)  # told once already
            text = (
                "You're sending messages faster than I can answer them. Please wait "
                f"about {max(1, round(wait))} seconds, then send your question again."
            )
            reply = Reply(ReplyKind.NOTICE, text=text, inbound_id=accepted.inbound_id)
            return await self._deliver(accepted, reply, render, kind="command")
        plan = await self._plan(accepted)
        if isinstance(plan, Chat | Grounded | ReviseDraft) and await self.team.over_quota(
            accepted.inbound
        ):
            # Said once a day; after that such messages go unanswered, while
            # verbatim answers and commands, which cost no model time, go on.
            if not await self.team.first_quota_notice(accepted.inbound):
                return await self._handled(accepted)
            reply = Reply(ReplyKind.NOTICE, text=QUOTA_NOTICE, inbound_id=accepted.inbound_id)
            return await self._deliver(accepted, reply, render, kind="command")
        return await self._execute(accepted, plan, render, slot, kind="chat")

    async def _run_command(self, accepted: Accepted, name: str, args: str) -> str | Plan:
        command = self.commands.get(name)
        if command is None:
            return f"I don't know the command /{name}. Send /help to see what I can do."
        try:
            access = await self.team.access_of(accepted.inbound)
            if command.access > access:
                log.warning("refused /%s to %s", name, accepted.inbound.platform_user)
                return refusal(name, command.access)
            ctx = CommandContext(
                inbound=accepted.inbound,
                conversation_id=accepted.stored.conversation_id,
                args=args,
                access=access,
                registry=self.commands,
                house=self,
                team=self.team,
            )
            return await command.handler(ctx)
        except (*FAILURES, *CONFIG_ERRORS) as exc:
            log.exception("command /%s failed", name)
            return user_message(exc)

    def _too_fast(self, inbound: Inbound) -> float | None:
        """None when the person may be answered; else the seconds to wait (0.0:
        they were told already in this spell, so nothing more is said)."""
        if self._user_rate is None:
            return None
        who = inbound.platform_user
        wait = self._user_rate.take(who)
        now = time.monotonic()
        if not wait:
            self._told_to_wait.pop(who, None)
            return None
        if self._told_to_wait.get(who, 0.0) > now:
            return 0.0
        self._told_to_wait[who] = now + wait
        if len(self._told_to_wait) > self._memory:
            self._told_to_wait = {k: t for k, t in self._told_to_wait.items() if t > now}
        return wait

    async def _plan(self, accepted: Accepted) -> Plan:
        """The knowledge base's plan for a plain message; plain chat without one.

        A knowledge base that fails escalates (the model must not stand in for
        the FAQ), except in ``assistant`` mode, which chats anyway.
        """
        if wants_human(accepted.text):
            return HandOff("request")
        knowledge = self.knowledge
        if knowledge is None:
            return Chat()
        ref = accepted.inbound.ref
        try:
            return await knowledge.plan(
                accepted.text,
                tenant=ref.tenant,
                conversation_key=ref.key,
                user=accepted.inbound.platform_user,
            )
        except Exception as exc:
            log.exception("inbound %s: the knowledge base failed", accepted.inbound_id)
            failure = f"the knowledge base failed: {exc!r}"
        try:
            if await knowledge.mode_for(ref.key, ref.tenant) == "assistant":
                return Chat()
        except Exception:
            log.warning("inbound %s: mode unknown, escalating", accepted.inbound_id)
        return Escalate(failure, (), None)

    # -- execution -----------------------------------------------------------------

    async def _execute(
        self, accepted: Accepted, plan: Plan, render: Render, slot: _Slot, *, kind: MessageKind
    ) -> Reply:
        if isinstance(plan, HandOff):
            return await self._hand_off(accepted, plan, render, kind=kind)
        if isinstance(plan, Escalate) and self.desk is not None and self.desk.connected:
            return await self._escalate_to_team(accepted, plan, render, kind=kind)
        # DESKMATE_ASK_RATING=all: the customer is invited to rate the answer.
        invite = (
            self.team.rates_answers
            and kind == "chat"
            and isinstance(plan, Verbatim | Chat | Grounded)
        )
        buttons = RATING_BUTTONS if invite else ()
        if isinstance(plan, Clarify):
            # Fixed text whose options are also buttons; a rating would compete with them.
            buttons, invite = plan.buttons, False
        if isinstance(plan, Verbatim | Escalate | Clarify):
            await self._record_knowledge(accepted, plan, plan.text)
            text = plan.text + (f"\n\n{INVITATION}" if invite else "")
            reply = Reply(
                ReplyKind.ANSWER, text=text, inbound_id=accepted.inbound_id, buttons=buttons
            )
            reply = await self._deliver(accepted, reply, render, kind=kind)
            if invite:
                await self._invite(accepted)
            return reply
        generation = Generation(await self._request(accepted, plan))
        if isinstance(plan, Grounded):
            chunks = self._grounded_chunks(accepted, plan, generation, slot.stop)
        elif isinstance(plan, ReviseDraft):
            chunks = self._draft_chunks(accepted, plan, generation, slot.stop)
        else:
            chunks = self._chat_chunks(accepted, generation, slot.stop)
        reply = Reply(ReplyKind.ANSWER, inbound_id=accepted.inbound_id, buttons=buttons)
        if invite:
            chunks = _then_invite(chunks, generation, reply)
        reply.attach(chunks)
        try:
            await render(reply)
            await reply.collect()
        except BaseException as exc:
            await self._fail(accepted, f"delivery failed: {exc!r}", retry=True)
            raise
        if generation.error is not None:
            reply.failed = True
            # The notice told the customer to send it again: answering it
            # later as well would be a stale second answer.
            await self._fail(accepted, generation.error, retry=False)
            if not isinstance(plan, ReviseDraft):
                await self._after_failure(accepted)
            return reply
        for kind_, count in (
            ("prompt", generation.prompt_tokens),
            ("completion", generation.completion_tokens),
        ):
            if count:
                self.metrics.tokens.labels(kind_).inc(count)
        await self._record_usage(accepted, plan, generation)
        stored = reply.text.removesuffix(f"\n\n{INVITATION}")
        if isinstance(plan, Chat):
            # The model's words, without notices meant for this one delivery.
            stored = generation.text.strip()
            if generation.stopped:
                stored += " " + STOPPED_MESSAGE
        elif isinstance(plan, ReviseDraft):
            await self._keep_draft(accepted, plan, generation)
        elif generation.settled is not None:
            await self._record_knowledge(accepted, generation.settled, reply.text)
        await self._record(
            accepted,
            text=stored,
            # A draft stays out of the conversation's history: in a group, the
            # model must not hand it to someone who asks what it last wrote.
            kind="command" if isinstance(plan, ReviseDraft) else kind,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            latency_ms=self._elapsed_ms(accepted),
        )
        if invite and not generation.stopped:
            await self._invite(accepted)
        return reply

    async def _invite(self, accepted: Accepted) -> None:
        try:
            await self.team.repository.invite_rating(
                tenant=accepted.inbound.ref.tenant,
                conversation_id=accepted.stored.conversation_id,
                user_id=accepted.inbound.platform_user,
                question=accepted.text,
                inbound_id=accepted.inbound_id,
            )
        except StorageError:
            log.exception("inbound %s: could not store the invitation to rate", accepted.inbound_id)

    async def _record_usage(
        self, accepted: Accepted, plan: Chat | Grounded | ReviseDraft, generation: Generation
    ) -> None:
        """What the answer cost, for quotas and /stats: tokens and model time
        (the backend's own figure when it gives one, else the stream's wall time)."""
        reported = generation.model_seconds
        try:
            await self.team.repository.record_usage(
                tenant=accepted.inbound.ref.tenant,
                user_id=accepted.inbound.platform_user,
                inbound_id=accepted.inbound_id,
                plan="draft"
                if isinstance(plan, ReviseDraft)
                else "grounded"
                if isinstance(plan, Grounded)
                else "chat",
                prompt_tokens=generation.prompt_tokens or 0,
                completion_tokens=generation.completion_tokens or 0,
                model_seconds=generation.wall_seconds if reported is None else reported,
                seconds_source="wall" if reported is None else "backend",
            )
        except StorageError:
            log.exception("inbound %s: could not record model usage", accepted.inbound_id)

    async def _request(
        self, accepted: Accepted, plan: Chat | Grounded | ReviseDraft
    ) -> GenerationRequest:
        tag = f"inbound:{accepted.inbound_id}"
        if isinstance(plan, Grounded):
            sampling = SamplingParams(max_new_tokens=plan.max_new_tokens, temperature=0.0)
            return GenerationRequest(plan.messages, sampling, self.llm_timeout, tag)
        if isinstance(plan, ReviseDraft):
            return GenerationRequest(plan.messages, drafting.SAMPLING, self.llm_timeout, tag)
        history: Sequence[HistoryItem] | None = accepted.stored.history
        if history is None or accepted.history_version != self._history_version(
            accepted.inbound.ref.key
        ):
            history = await self.repository.history(
                accepted.stored.conversation_id,
                upto_message_id=accepted.stored.message_id,
                limit=self.history_messages,
            )
        messages = build_messages(
            system_prompt=plan.system_prompt or self.system_prompt,
            history=history,
            budget=self.backend.context_window - self.sampling.max_new_tokens,
            count_tokens=self._count_tokens,
        )
        return GenerationRequest(messages, self.sampling, self.llm_timeout, tag)

    async def _chat_chunks(
        self, accepted: Accepted, generation: Generation, stop: asyncio.Event
    ) -> AsyncIterator[str]:
        if accepted.truncated:
            yield (
                f"(Your message was very long, so I read only its first "
                f"{self.max_input_chars:,} characters.)\n\n"
            )
        async for text in self._model_text(accepted, generation, stop):
            yield text
        if generation.stopped:
            yield " " + STOPPED_MESSAGE
        elif generation.error is not None:
            yield generation.notice(after_text=bool(generation.text))

    async def _grounded_chunks(
        self, accepted: Accepted, plan: Grounded, generation: Generation, stop: asyncio.Event
    ) -> AsyncIterator[str]:
        gate = GroundedGate(plan.question, plan.decision.hits)
        async for text in self._model_text(accepted, generation, stop):
            if shown := gate.feed(text):
                yield shown
        if generation.error is not None:
            yield generation.notice(after_text=bool(gate.shown))
            return
        if generation.stopped:
            yield (" " if gate.shown else "") + STOPPED_MESSAGE
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

    async def _draft_chunks(
        self, accepted: Accepted, plan: ReviseDraft, generation: Generation, stop: asyncio.Event
    ) -> AsyncIterator[str]:
        shown = False
        async for text in self._model_text(accepted, generation, stop):
            if not shown:
                shown = True
                yield drafting.heading(plan.draft)
            yield text
        if generation.stopped:
            yield " " + STOPPED_MESSAGE
        elif generation.error is not None:
            yield generation.notice(after_text=shown)
        elif not generation.text.strip():
            yield drafting.EMPTY_DRAFT

    async def _model_text(
        self, accepted: Accepted, generation: Generation, stop: asyncio.Event
    ) -> AsyncIterator[str]:
        """The one generation path: the model's text as it streams.

        Usage, a failure (with what the user is told) and a ``/reset`` that
        stopped it are noted on ``generation``; nothing is raised.
        """
        request = generation.request
        parts = generation.parts
        if not self.breaker.allow():
            # The model failed the last requests in a row: fail at once rather
            # than make every customer wait out the timeout in turn.
            generation.fail("LLM circuit open after repeated failures", FAILED_MESSAGE)
            log.warning("inbound %s: %s", accepted.inbound_id, generation.error)
            return
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
                        parts.append(delta.text)
                        # Leading whitespace is the model's, not the customer's concern.
                        text = delta.text.lstrip() if len(parts) == 1 else delta.text
                        if text:
                            yield text
                    if stop.is_set():
                        generation.stopped = True
                        break
        except (TimeoutError, LLMTimeout) as exc:
            self.breaker.failed()
            generation.fail(f"LLM timeout after {request.timeout}s: {exc}", TIMEOUT_MESSAGE)
            log.warning("inbound %s: %s", accepted.inbound_id, generation.error)
        except LLMBusy as exc:
            self.breaker.inconclusive()  # a full queue says nothing about the model's health
            generation.fail(f"LLM busy: {exc}", busy_message(exc.position), separate=False)
            log.warning("inbound %s: %s", accepted.inbound_id, generation.error)
        except LLMError as exc:
            self.breaker.failed()
            generation.fail(f"LLM failed: {exc}", FAILED_MESSAGE)
            log.error("inbound %s: %s", accepted.inbound_id, generation.error, exc_info=exc)
        except Exception as exc:
            # A bug in a backend must not take the adapter down with it.
            self.breaker.failed()
            generation.fail(f"LLM crashed: {exc!r}", FAILED_MESSAGE)
            log.exception("inbound %s: backend raised", accepted.inbound_id)
        else:
            self.breaker.succeeded()
        finally:
            generation.wall_seconds = time.monotonic() - started
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()

    # -- handoff ----------------------------------------------------------------------

    async def _hand_off(
        self, accepted: Accepted, plan: HandOff, render: Render, *, kind: MessageKind
    ) -> Reply:
        desk = self.desk
        if desk is None or not desk.connected:
            # Kept for the operator to see, and said plainly: nobody is promised.
            await self._record_knowledge(
                accepted, Escalate("the customer asked for a person", (), None), NO_TEAM
            )
            reply = Reply(ReplyKind.NOTICE, text=NO_TEAM, inbound_id=accepted.inbound_id)
            return await self._deliver(accepted, reply, render, kind=kind)
        notice = await self._open_ticket(accepted, trigger=plan.trigger)
        reply = Reply(ReplyKind.NOTICE, text=notice, inbound_id=accepted.inbound_id)
        return await self._deliver(accepted, reply, render, kind=kind)

    async def _escalate_to_team(
        self, accepted: Accepted, plan: Escalate, render: Render, *, kind: MessageKind
    ) -> Reply:
        notice = await self._open_ticket(accepted, trigger="escalation", candidates=plan.candidates)
        text = f"{plan.preface}\n\n" if plan.preface else ""
        text += f"{NO_RELIABLE_ANSWER} {notice}"
        await self._record_knowledge(accepted, plan, text)
        reply = Reply(ReplyKind.ANSWER, text=text, inbound_id=accepted.inbound_id)
        return await self._deliver(accepted, reply, render, kind=kind)

    async def _open_ticket(
        self,
        accepted: Accepted,
        *,
        trigger: str,
        candidates: Sequence[Passage] = (),
        summarize: bool = True,
    ) -> str:
        """Open the conversation's ticket and queue it for the support space;
        returns what the customer is told."""
        desk = self.desk
        assert desk is not None
        history = await self.repository.history(
            accepted.stored.conversation_id,
            upto_message_id=accepted.stored.message_id,
            limit=12,
        )
        if await desk.open_ticket_of(accepted.stored.conversation_id) is None and summarize:
            summary = await self._summarize(accepted, desk.summary_messages(history))
        else:
            summary = ""
        opened = await desk.open(accepted, trigger=trigger, history=history, candidates=candidates)
        if opened.created:
            self.metrics.handoffs.labels(trigger).inc()
        if not opened.ticket.posted:
            # Queued even when the ticket was already open: a crash between
            # opening and queueing must not leave a ticket nobody can see.
            await desk.post(opened.ticket, summary or opened.ticket.summary)
        return opened.notice

    async def _summarize(self, accepted: Accepted, messages: Sequence[ChatMessage]) -> str:
        """The model's case summary for a ticket ("" when it cannot write one in time)."""
        timeout = min(self.llm_timeout or SUMMARY_TIMEOUT, SUMMARY_TIMEOUT)
        request = GenerationRequest(
            messages, SUMMARY_SAMPLING, timeout, f"summary:{accepted.inbound_id}"
        )
        generation = Generation(request)
        async for _ in self._model_text(accepted, generation, asyncio.Event()):
            pass
        if generation.error is not None:
            return ""
        return generation.text.strip()[:1000]

    async def _after_failure(self, accepted: Accepted) -> None:
        """A conversation whose answers failed twice in a row goes to a person."""
        desk = self.desk
        if desk is None or not desk.connected:
            return
        conversation = accepted.stored.conversation_id
        try:
            if await desk.tickets.consecutive_failures(conversation) < 2:
                return
            if await desk.open_ticket_of(conversation) is not None:
                return
            notice = await self._open_ticket(accepted, trigger="model_failure", summarize=False)
            ticket = await desk.open_ticket_of(conversation)
            if ticket is not None:
                await desk.tickets.enqueue(
                    f"opened:{ticket.id}",
                    ticket.customer_address,
                    notice,
                    kind="notice",
                    ticket_id=ticket.id,
                )
        except StorageError:
            log.exception("inbound %s: could not hand over after failures", accepted.inbound_id)

    async def _in_support_space(
        self, accepted: Accepted, render: Render, slot: _Slot, space: SupportSpace
    ) -> Reply:
        """A message in the support space: agent commands and relays to customers;
        other commands as anywhere; agents' own chatter gets no answer."""
        desk = self.desk
        assert desk is not None
        command = accepted.command
        if command is not None and command[0] == "takeover":
            text = await self._take_over(accepted, command[1], space)
        elif command is not None and command[0] not in AGENT_COMMANDS:
            result = await self._run_command(accepted, *command)
            if isinstance(result, HandOff):
                result = "This is the support space: /human is for customers."
            if not isinstance(result, str):
                return await self._execute(accepted, result, render, slot, kind="command")
            if command[0] == "help":
                result += "\n" + AGENT_HELP
            text = result
        else:
            text = await desk.from_space(accepted, space)
        if text is None:
            return await self._handled(accepted)
        reply = Reply(ReplyKind.COMMAND, text=text, inbound_id=accepted.inbound_id)
        return await self._deliver(accepted, reply, render, kind="command")

    async def _take_over(self, accepted: Accepted, args: str, space: SupportSpace) -> str:
        desk = self.desk
        assert desk is not None
        if not args.strip().isdigit():
            return "Which conversation? /takeover <conversation number> (from /tickets)."
        conversation = int(args.strip())
        address = await self.repository.conversation(conversation)
        if address is None:
            return f"There is no conversation {conversation}."
        if desk.settings.space_of(address.platform, address.tenant, address.chat) is not None:
            return "That is a support-space conversation, not a customer's."
        customer, name = await self.repository.last_customer(conversation)
        agent = accepted.inbound
        ticket, created = await desk.take_over(
            conversation,
            customer=customer,
            customer_name=name,
            space=space,
            agent=agent.platform_user,
            agent_name=agent.user_name,
            history=await self.repository.history(conversation, upto_message_id=None, limit=12),
            key=f"takeover:{accepted.inbound_id}",
        )
        if not created:
            return f"Conversation {conversation} already has ticket #{ticket.id} ({ticket.state})."
        self.metrics.handoffs.labels("takeover").inc()
        await self.team.audit(
            address.tenant,
            agent.platform_user,
            "takeover",
            f"conversation {conversation}",
            {"ticket": ticket.id},
        )
        return (
            f"You have conversation {conversation} as ticket #{ticket.id}; "
            "it opens in its own thread."
        )

    async def _storage_failed(
        self, accepted: Accepted, delivered: _Delivered, exc: StorageError
    ) -> Reply:
        """The records failed mid-answer: say so plainly (unless an answer got
        out already) and leave the event to be answered again."""
        log.error("inbound %s: storage failed mid-answer: %s", accepted.inbound_id, exc)
        # Only where a sweep can answer it later is the customer promised that.
        later = accepted.inbound.ref.platform in self._swept
        text = STORAGE_DELAY_MESSAGE if later else STORAGE_MESSAGE
        reply = Reply(ReplyKind.NOTICE, text=text, inbound_id=accepted.inbound_id)
        reply.failed = True
        if delivered.count:
            return reply
        try:
            await delivered(reply)
        except Exception:
            log.exception("inbound %s: could not tell the customer", accepted.inbound_id)
        # If this fails too, the claim lapses and the sweep takes the event.
        await self._fail(accepted, f"storage failed: {exc}", retry=True)
        return reply

    async def _handled(self, accepted: Accepted) -> Reply:
        await self.repository.mark_handled(accepted.stored)
        return Reply(ReplyKind.SILENT, inbound_id=accepted.inbound_id)

    # -- bookkeeping -----------------------------------------------------------------

    async def _deliver(
        self, accepted: Accepted, reply: Reply, render: Render, *, kind: MessageKind
    ) -> Reply:
        try:
            await render(reply)
        except BaseException as exc:
            await self._fail(accepted, f"delivery failed: {exc!r}", retry=True)
            raise
        await self._record(
            accepted, text=reply.text, kind=kind, latency_ms=self._elapsed_ms(accepted)
        )
        return reply

    async def _record(
        self,
        accepted: Accepted,
        *,
        text: str,
        kind: MessageKind,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        latency_ms: int | None = None,
    ) -> None:
        """Store a delivered answer, retrying while the database is away.

        The retries run in the answer's own task, holding the conversation's
        turn and the event's claim (renewed once the database answers again):
        an answer that got out must not be answered again, and a later
        message must not be answered, nor a replayed /reset wipe it, before
        this one is on record.
        """
        deadline = time.monotonic() + self.record_retry_for
        attempt = 0
        while True:
            try:
                await self.repository.record_answer(
                    accepted.stored,
                    text=text,
                    kind=kind,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    latency_ms=latency_ms,
                )
                if attempt:
                    log.info("inbound %s: answer recorded after all", accepted.inbound_id)
                return
            except StorageError as exc:
                if time.monotonic() >= deadline:
                    log.error(
                        "inbound %s: delivered answer never recorded; it may be answered again",
                        accepted.inbound_id,
                    )
                    raise
                delay = _RECORD_DELAYS[min(attempt, len(_RECORD_DELAYS) - 1)]
                attempt += 1
                log.warning(
                    "inbound %s: answer delivered but not recorded (%s); retrying in %.1f s",
                    accepted.inbound_id,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _record_knowledge(self, accepted: Accepted, plan: KnowledgePlan, text: str) -> None:
        """Log the knowledge base's answer (an escalation opens one)."""
        if self.knowledge is None:
            return
        inbound = accepted.inbound
        try:
            await self.knowledge.record(
                plan,
                question=accepted.text,
                answer=text,
                tenant=inbound.ref.tenant,
                conversation_key=inbound.ref.key,
                user_id=inbound.platform_user,
            )
        except Exception:
            # The customer still gets the answer; the operator sees what is missing.
            log.exception("inbound %s: could not log the %s answer", accepted.inbound_id, plan.path)

    async def _keep_draft(
        self, accepted: Accepted, plan: ReviseDraft, generation: Generation
    ) -> None:
        text = generation.text.strip()
        if self.knowledge is None or generation.stopped or not text:
            return
        d = plan.draft
        # Keeps its author; revising it restarts its clock.
        written = dataclasses.replace(d, text=text, updated=time.time())
        try:
            await self.knowledge.set_draft(accepted.inbound.ref.key, written.dumps())
        except StorageError:
            log.exception("inbound %s: could not keep the draft", accepted.inbound_id)

    async def _fail(self, accepted: Accepted, error: str, *, retry: bool) -> None:
        retry = retry and accepted.inbound.ref.platform in self._swept
        try:
            await self.repository.mark_failed(accepted.inbound_id, error, retry=retry)
        except Exception:
            # The user has their answer; a bookkeeping failure only costs a retry.
            log.exception("could not mark inbound %s failed", accepted.inbound_id)

    @staticmethod
    def _elapsed_ms(accepted: Accepted) -> int:
        return int((time.monotonic() - accepted.received) * 1000)


class _Delivered:
    """A ``Render`` that counts the replies that got out whole."""

    def __init__(self, render: Render) -> None:
        self._render = render
        self.count = 0

    async def __call__(self, reply: Reply) -> None:
        await self._render(reply)
        self.count += 1


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
        """What the user is told about the failure, set apart from text already shown."""
        return ("\n\n" if after_text and self._separate else "") + self._notice


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


async def _then_invite(
    chunks: AsyncIterator[str], generation: Generation, reply: Reply
) -> AsyncIterator[str]:
    async for chunk in chunks:
        yield chunk
    if generation.error is None and not generation.stopped:
        yield f"\n\n{INVITATION}"
    else:
        # Adapters add buttons once the stream has ended: a failed or stopped
        # answer is nothing to rate.
        reply.buttons = ()


def _own_command(accepted: Accepted) -> bool:
    """Commands a customer in a handoff still runs themselves (the rest is relayed)."""
    return accepted.command is not None and accepted.command[0] in (
        "reset",
        "forget",
        "help",
        "start",
        "human",
        "rate",
    )
