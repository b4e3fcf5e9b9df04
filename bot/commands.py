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
from bot.types import Inbound
from storage.repository import ForgetResult, Stats

_COMMAND = re.compile(r"^/([A-Za-z][A-Za-z0-9_]{0,31})(?:@\S+)?(?:\s+(.*))?$", re.DOTALL)


class Housekeeping(Protocol):
    """What the built-in commands may ask of the conversation manager."""

    async def reset(self, conversation_id: int) -> int:
        """Forget a conversation's history; returns how many messages went."""
        ...

    async def forget_user(self, platform_user: str) -> ForgetResult: ...

    async def stats(self) -> Stats: ...

    async def role_of(self, platform_user: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a command handler gets: the message, its arguments, and the few
    services commands use."""

    inbound: Inbound
    conversation_id: int
    args: str
    is_admin: bool
    registry: CommandRegistry
    house: Housekeeping


# A handler answers with text, or with a plan for the manager to execute
# (``/draft`` asks the model to write through the one generation path).
Handler = Callable[[CommandContext], Awaitable[str | Plan]]


@dataclass(frozen=True, slots=True)
class Command:
    """``description`` is shown in /help and in platform command menus."""

    name: str
    description: str
    handler: Handler
    admin_only: bool = False


def parse_command(text: str) -> tuple[str, str] | None:
    """``"/Help@deskmate_bot  me"`` -> ``("help", "me")``; None if not a command."""
    match = _COMMAND.match(text.strip())
    if match is None:
        return None
    return match.group(1).lower(), (match.group(2) or "").strip()


class CommandRegistry:
    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def add(self, command: Command) -> None:
        if command.name in self._commands:
            raise ValueError(f"command /{command.name} is registered twice")
        self._commands[command.name] = command

    def command(
        self, name: str, description: str, *, admin_only: bool = False
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.add(Command(name, description, handler, admin_only))
            return handler

        return register

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def visible(self, *, include_admin: bool = False) -> list[Command]:
        return [c for c in self._commands.values() if include_admin or not c.admin_only]

    def help_text(self, *, is_admin: bool) -> str:
        lines = ["Here is what I can do:"]
        for cmd in self.visible(include_admin=is_admin):
            suffix = " (admins)" if cmd.admin_only else ""
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
        return ctx.registry.help_text(is_admin=ctx.is_admin)

    @registry.command("reset", "forget this conversation's history")
    async def reset(ctx: CommandContext) -> str:
        removed = await ctx.house.reset(ctx.conversation_id)
        return f"Done — I've forgotten this conversation ({removed} messages). Let's start fresh."

    @registry.command("forget", "delete everything I stored about you")
    async def forget(ctx: CommandContext) -> str:
        result = await ctx.house.forget_user(ctx.inbound.platform_user)
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

    @registry.command("stats", "usage figures", admin_only=True)
    async def stats(ctx: CommandContext) -> str:
        s = await ctx.house.stats()

        def ms(value: float | None) -> str:
            return "—" if value is None else f"{value / 1000:.2f} s"

        return "\n".join(
            [
                "Deskmate usage:",
                f"conversations: {s.conversations}",
                f"messages: {s.messages} ({s.answers} answers, {s.failed} failed)",
                f"tokens: {s.prompt_tokens} prompt + {s.completion_tokens} completion",
                f"answer latency: p50 {ms(s.latency_p50_ms)}, p95 {ms(s.latency_p95_ms)}",
            ]
        )

    return registry
