"""Platform-neutral commands: one registry shared by every adapter.

A command is a message whose first word starts with ``/``. Adapters pass the
text through unchanged (after stripping platform decorations such as
Telegram's ``@botname`` suffix); the manager looks the command up here.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from bot.plans import HandOff, Plan
from bot.team.access import Access
from bot.team.service import Team
from bot.types import Inbound
from storage.repository import ForgetResult

_COMMAND = re.compile(r"^/([A-Za-z][A-Za-z0-9_]{0,31})(?:@\S+)?(?:\s+(.*))?$", re.DOTALL)


class Housekeeping(Protocol):
    """What the built-in commands may ask of the conversation manager."""

    async def reset(self, conversation_id: int) -> int:
        """Forget a conversation's history; returns how many messages went."""
        ...

    async def clear_draft(self, conversation_key: str) -> None:
        """Close the conversation's open draft, whoever opened it."""
        ...

    async def forget_user(self, platform_user: str) -> ForgetResult: ...


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a command handler gets: the message, its arguments, the sender's
    access level in this tenant, and the few services commands use."""

    inbound: Inbound
    conversation_id: int
    args: str
    access: Access
    registry: CommandRegistry
    house: Housekeeping
    team: Team

    @property
    def is_admin(self) -> bool:
        """An admin of this tenant, or an owner."""
        return self.access >= Access.ADMIN

    @property
    def is_owner(self) -> bool:
        return self.access >= Access.OWNER

    @property
    def tenant(self) -> str:
        return self.inbound.ref.tenant


# A handler answers with text, or with a plan for the manager to execute
# (``/draft`` asks the model to write through the one generation path).
Handler = Callable[[CommandContext], Awaitable[str | Plan]]


@dataclass(frozen=True, slots=True)
class Command:
    """``description`` is shown in /help and in platform command menus; ``access``
    is who may run it (handlers may narrow it further, e.g. by tenant)."""

    name: str
    description: str
    handler: Handler
    access: Access = Access.EVERYONE


def parse_command(text: str) -> tuple[str, str] | None:
    """``"/Help@deskmate_bot  me"`` -> ``("help", "me")``; None if not a command."""
    match = _COMMAND.match(text.strip())
    if match is None:
        return None
    return match.group(1).lower(), (match.group(2) or "").strip()


def refusal(name: str, access: Access) -> str:
    return f"Sorry, /{name} is only for this bot's {access.who}."


class CommandRegistry:
    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def add(self, command: Command) -> None:
        if command.name in self._commands:
            raise ValueError(f"command /{command.name} is registered twice")
        self._commands[command.name] = command

    def command(
        self, name: str, description: str, *, access: Access = Access.EVERYONE
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.add(Command(name, description, handler, access))
            return handler

        return register

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def visible(self, access: Access = Access.EVERYONE) -> list[Command]:
        """The commands someone with ``access`` may run."""
        return [c for c in self._commands.values() if c.access <= access]

    def help_text(self, access: Access = Access.EVERYONE) -> str:
        lines = ["Here is what I can do:"]
        for cmd in self.visible(access):
            suffix = f" ({cmd.access.who})" if cmd.access > Access.EVERYONE else ""
            lines.append(f"/{cmd.name} — {cmd.description}{suffix}")
        lines.append("Anything else you write, I answer as a support question.")
        return "\n".join(lines)


def builtin_commands() -> CommandRegistry:
    """The registry every deployment starts with."""
    registry = CommandRegistry()

    @registry.command("start", "introduce Deskmate")
    async def start(ctx: CommandContext) -> str:
        return (
            "Hi! I'm Deskmate, this team's support assistant. Ask me anything about "
            "our product or service and I'll do my best to help; if I can't, I'll say so. "
            "Send /help to see what else I can do."
        )

    @registry.command("help", "list commands")
    async def help_(ctx: CommandContext) -> str:
        return ctx.registry.help_text(ctx.access)

    @registry.command("reset", "forget this conversation's history")
    async def reset(ctx: CommandContext) -> str:
        removed = await ctx.house.reset(ctx.conversation_id)
        await ctx.house.clear_draft(ctx.inbound.ref.key)
        return f"Done — I've forgotten this conversation ({removed} messages). Let's start fresh."

    @registry.command("forget", "delete everything I stored about you")
    async def forget(ctx: CommandContext) -> str:
        me = ctx.inbound.platform_user
        result = await ctx.house.forget_user(me)
        # The request itself is kept, without anything they said.
        await ctx.team.audit(
            ctx.tenant, me, "forget", me, {"messages": result.messages, "drafts": result.drafts}
        )
        extra = [
            f"{count} {what}"
            for count, what in (
                (result.faq_answers, "logged FAQ answers"),
                (result.escalations, "escalations"),
                (result.drafts, "drafts"),
            )
            if count
        ]
        also = f" I also removed {', '.join(extra)}." if extra else ""
        return (
            f"Done — I deleted {result.messages} stored messages from and to you, "
            f"and your profile.{also} New messages you send will be stored again."
        )

    @registry.command("human", "talk to a person from the support team")
    async def human(ctx: CommandContext) -> str | Plan:
        return HandOff("request")

    @registry.command(
        "stats",
        "usage, model cost and ratings here (owners: /stats TENANT|all)",
        access=Access.ADMIN,
    )
    async def stats(ctx: CommandContext) -> str:
        return await tenant_stats(ctx)

    return registry


async def tenant_stats(ctx: CommandContext) -> str:
    """The caller's tenant's figures; owners may name another tenant or ``all``."""
    wanted = ctx.args.strip()
    tenant: str | None = ctx.tenant
    if wanted:
        if not ctx.is_owner:
            return "Admins see their own workspace's figures: /stats without a name."
        tenant = None if wanted.lower() == "all" else wanted
    s = await ctx.team.repository.stats(tenant)

    def seconds(value: float | None) -> str:
        return "—" if value is None else f"{value / 1000:.2f} s"

    where = "every tenant" if tenant is None else f"tenant {tenant or '(shared)'}"
    n = s.model_answers
    tokens = s.prompt_tokens + s.completion_tokens
    per_answer = (
        f"per model answer: {tokens / n:.0f} tokens, {s.model_seconds / n:.2f} s of model time"
        if n
        else "per model answer: —"
    )
    timing = (
        "model time as reported by the model"
        if n and s.backend_timed == n
        else "model time measured as wall time of each generation"
    )
    rated = s.rated_good + s.rated_bad
    ratings = (
        f"ratings: {s.rated_good} 👍, {s.rated_bad} 👎 ({100 * s.rated_good / rated:.0f}% good)"
        if rated
        else "ratings: none yet"
    )
    return "\n".join(
        [
            f"Deskmate usage, {where}:",
            f"conversations: {s.conversations}",
            f"messages: {s.messages} ({s.answers} answers, {s.failed} failed)",
            f"answer latency: p50 {seconds(s.latency_p50_ms)}, p95 {seconds(s.latency_p95_ms)}",
            f"model answers: {n}; tokens: {s.prompt_tokens} prompt + "
            f"{s.completion_tokens} completion; model time: {s.model_seconds:.1f} s",
            f"{per_answer} ({timing})",
            ratings,
        ]
    )
