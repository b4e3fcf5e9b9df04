"""Platform-neutral commands: one registry for every command, customers',
agents' and admins', shared by every adapter.

A command is a message whose first word starts with ``/``. Adapters pass the
text through unchanged (after stripping platform decorations such as
Telegram's ``@botname`` suffix); the router hands it to
``CommandRegistry.dispatch``, which checks where it may run and who may run
it, runs its handler and turns its failures into what the sender is told.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from bot.errors import CONFIG_ERRORS, FAILURES, user_message
from bot.handoff import commands as desk_commands
from bot.handoff.commands import SpaceContext
from bot.messages import DEFAULT_LANGUAGE, keys, say
from bot.plans import HandOff, Plan
from bot.team.access import Access
from bot.team.service import Team
from bot.types import Inbound
from storage.repository import ForgetResult

log = logging.getLogger(__name__)

_COMMAND = re.compile(r"^/([A-Za-z][A-Za-z0-9_]{0,31})(?:@\S+)?(?:\s+(.*))?$", re.DOTALL)
# A command written without its slash, as agents do in a ticket's thread ("claim").
_BARE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\b[:\s]*(.*)$", re.DOTALL)


class Scope(StrEnum):
    """Where a command runs: in any conversation, in a support space, or in the
    thread of one of its tickets."""

    ANYWHERE = "anywhere"
    SPACE = "space"
    TICKET = "ticket"


class Housekeeping(Protocol):
    """What the built-in commands may ask of the conversation manager.

    ``upto_inbound`` is the inbound event of the command that asks: what was
    stored after it (a message sent right after ``/reset``, stored while an
    earlier answer streamed) is never touched. None: everything stored so far.
    """

    async def reset(
        self, conversation_id: int, *, upto_inbound: int | None, author: str | None = None
    ) -> int:
        """Forget a conversation's history (with ``author``: only that
        person's messages and the answers to them); returns how many
        messages went."""
        ...

    async def clear_draft(self, conversation_key: str, *, author: str) -> bool:
        """Close the conversation's open draft if ``author`` opened it (or it
        expired); returns whether one was closed."""
        ...

    async def forget_user(
        self, platform_user: str, *, upto_inbound: int | None = None
    ) -> ForgetResult: ...


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a command handler gets: the message, its arguments, the sender's
    access level in this tenant, the few services commands use, and, for a
    message in a support space, that space (``support``). ``inbound_id``
    is the command's own stored event (None where it was not stored)."""

    inbound: Inbound
    conversation_id: int
    args: str
    access: Access
    registry: CommandRegistry
    house: Housekeeping
    team: Team
    support: SpaceContext | None = None
    inbound_id: int | None = None
    # The sender's language (bot.language): the one the reply is written in.
    language: str = "en"

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
    """One command of any kind.

    ``description`` is shown in /help and in platform command menus (for a
    command of the support space: in the space's help, after its ``usage``,
    which defaults to ``/name``). ``access`` is who may run it; handlers may
    narrow it further, e.g. by tenant. ``scope`` is where it runs. In a
    support space its own commands (scope space or ticket) run for whoever
    writes there, as a reply there reaches the customer: being in the space
    is the platform's gate. ``elsewhere`` is the /help line of a space command
    that also answers outside the support spaces (where ``access`` applies
    and ``support`` is None); without it the command is unknown there.
    ``customer_runs``: a customer whose conversation is with a person still
    runs it themselves; any other command of theirs is relayed to the
    ticket. ``bare``: in a ticket it works without the slash too.
    """

    name: str
    description: str
    handler: Handler
    access: Access = Access.EVERYONE
    scope: Scope = Scope.ANYWHERE
    customer_runs: bool = False
    bare: bool = False
    usage: str = ""
    elsewhere: str = ""

    def describe(self, language: str = DEFAULT_LANGUAGE) -> str:
        """``description`` in ``language``: it may name a text of the catalog."""
        return say(self.description, language) if self.description in keys() else self.description


def parse_command(text: str) -> tuple[str, str] | None:
    """``"/Help@deskmate_bot  me"`` -> ``("help", "me")``; None if not a command."""
    match = _COMMAND.match(text.strip())
    if match is None:
        return None
    return match.group(1).lower(), (match.group(2) or "").strip()


def refusal(name: str, access: Access, language: str = "en") -> str:
    return say("commands.refusal", language, name=name, who=access.who_in(language))


class CommandRegistry:
    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def add(self, command: Command) -> None:
        if command.name in self._commands:
            raise ValueError(f"command /{command.name} is registered twice")
        self._commands[command.name] = command

    def command(
        self,
        name: str,
        description: str,
        *,
        access: Access = Access.EVERYONE,
        scope: Scope = Scope.ANYWHERE,
        customer_runs: bool = False,
        bare: bool = False,
        usage: str = "",
        elsewhere: str = "",
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.add(
                Command(
                    name,
                    description,
                    handler,
                    access=access,
                    scope=scope,
                    customer_runs=customer_runs,
                    bare=bare,
                    usage=usage,
                    elsewhere=elsewhere,
                )
            )
            return handler

        return register

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def customer_runs(self, name: str) -> bool:
        """Whether a customer handed to a person still runs /name themselves."""
        command = self._commands.get(name)
        return command is not None and command.customer_runs

    def parse_bare(self, text: str) -> tuple[str, str] | None:
        """``"claim"`` or ``"note: call back"`` as a command, for the commands
        that work without a slash in a ticket; None for anything else."""
        match = _BARE.match(text)
        if match is None:
            return None
        name = match.group(1).lower()
        command = self._commands.get(name)
        if command is None or not command.bare:
            return None
        return name, match.group(2).strip()

    def visible(self, access: Access = Access.EVERYONE) -> list[Command]:
        """The commands someone with ``access`` may run outside the support
        spaces; the space's own commands that answer there come last."""
        commands = list(self._commands.values())
        anywhere = [c for c in commands if c.scope is Scope.ANYWHERE]
        also = [c for c in commands if c.scope is not Scope.ANYWHERE and c.elsewhere]
        return [c for c in anywhere + also if c.access <= access]

    def help_text(self, access: Access = Access.EVERYONE, language: str = "en") -> str:
        lines = [say("commands.help_head", language)]
        for cmd in self.visible(access):
            who = (
                say("commands.help_who", language, who=cmd.access.who_in(language))
                if cmd.access > Access.EVERYONE
                else ""
            )
            description = cmd.describe(language) if cmd.scope is Scope.ANYWHERE else cmd.elsewhere
            lines.append(
                say("commands.help_line", language, name=cmd.name, description=description, who=who)
            )
        lines.append(say("commands.help_foot", language))
        return "\n".join(lines)

    def space_help(self, language: str = "en") -> str:
        """What the support space's own commands do, for /help there."""
        return desk_commands.space_help(
            [
                (c.usage or f"/{c.name}", c.describe(language))
                for c in self._commands.values()
                if c.scope is not Scope.ANYWHERE
            ],
            language,
        )

    async def dispatch(
        self,
        name: str,
        args: str,
        *,
        inbound: Inbound,
        conversation_id: int,
        house: Housekeeping,
        team: Team,
        scope: Scope = Scope.ANYWHERE,
        support: SpaceContext | None = None,
        inbound_id: int | None = None,
        language: str = "en",
    ) -> str | Plan:
        """Run /name written where ``scope`` says (``support``: the support
        space it was written in); returns the handler's text or plan, or what
        the sender is told instead: an unknown command, a refusal, a command
        used outside its scope, or a failure (its cause is logged)."""
        command = self._commands.get(name)
        if command is None or (
            scope is Scope.ANYWHERE
            and command.scope is not Scope.ANYWHERE
            and not command.elsewhere
        ):
            return say("commands.unknown", language, name=name)
        if scope is Scope.SPACE and command.scope is Scope.TICKET:
            return say("handoff.inside_ticket", language, name=name)
        try:
            access = await team.access_of(inbound)
            checked = command.scope is Scope.ANYWHERE or scope is Scope.ANYWHERE
            if checked and command.access > access:
                log.warning("refused /%s to %s", name, inbound.platform_user)
                return refusal(name, command.access, language)
            ctx = CommandContext(
                inbound=inbound,
                conversation_id=conversation_id,
                args=args,
                access=access,
                registry=self,
                house=house,
                team=team,
                support=support,
                inbound_id=inbound_id,
                language=language,
            )
            return await command.handler(ctx)
        except (*FAILURES, *CONFIG_ERRORS) as exc:
            log.exception("command /%s failed", name)
            return user_message(exc, language)


def builtin_commands() -> CommandRegistry:
    """The registry every deployment starts with: the customers' commands,
    /stats, and the support space's commands."""
    registry = CommandRegistry()

    @registry.command("start", "commands.describe.start", customer_runs=True)
    async def start(ctx: CommandContext) -> str:
        return say("commands.start", ctx.language)

    @registry.command("help", "commands.describe.help", customer_runs=True)
    async def help_(ctx: CommandContext) -> str:
        text = ctx.registry.help_text(ctx.access, ctx.language)
        if ctx.support is not None:
            text += "\n" + ctx.registry.space_help(ctx.language)
        return text

    @registry.command("reset", "commands.describe.reset", customer_runs=True)
    async def reset(ctx: CommandContext) -> str:
        return await reset_conversation(ctx)

    @registry.command("forget", "commands.describe.forget", customer_runs=True)
    async def forget(ctx: CommandContext) -> str:
        me = ctx.inbound.platform_user
        result = await ctx.house.forget_user(me, upto_inbound=ctx.inbound_id)
        # The request itself is kept, without anything they said.
        await ctx.team.audit(
            ctx.tenant, me, "forget", me, {"messages": result.messages, "drafts": result.drafts}
        )
        extra = [
            say(key, ctx.language, count=count)
            for count, key in (
                (result.faq_answers, "commands.forget_faq_answers"),
                (result.escalations, "commands.forget_escalations"),
                (result.drafts, "commands.forget_drafts"),
            )
            if count
        ]
        also = say("commands.forget_also", ctx.language, what=", ".join(extra)) if extra else ""
        return say("commands.forget_done", ctx.language, messages=result.messages, also=also)

    @registry.command("human", "commands.describe.human", customer_runs=True)
    async def human(ctx: CommandContext) -> str | Plan:
        return HandOff("request")

    @registry.command(
        "stats",
        "commands.describe.stats",
        access=Access.ADMIN,
    )
    async def stats(ctx: CommandContext) -> str:
        return await tenant_stats(ctx)

    add_space_commands(registry)
    return registry


def add_space_commands(registry: CommandRegistry) -> None:
    """The support space's commands; ``description`` is what its help says."""
    inside = "inside a ticket"
    for name, usage, handler in (
        ("claim", "", desk_commands.claim),
        ("resolve", "", desk_commands.resolve),
        ("release", "", desk_commands.release),
        ("note", "/note TEXT", desk_commands.note),
    ):
        registry.add(Command(name, inside, handler, scope=Scope.TICKET, bare=True, usage=usage))
    registry.add(
        Command(
            "learn",
            "proposes your last answer as an FAQ entry",
            desk_commands.learn,
            access=Access.AGENT,
            scope=Scope.TICKET,
            bare=True,
            usage="/learn (or /learn FAQ-ID)",
            elsewhere="in a ticket: propose your answer as an FAQ entry",
        )
    )
    registry.add(
        Command(
            "suggest",
            "drafts a suggested reply again (send, edit or discard N: act on suggestion N)",
            desk_commands.suggest,
            access=Access.AGENT,
            scope=Scope.TICKET,
            usage="/suggest",
        )
    )
    registry.add(
        Command("tickets", "lists the open ones", desk_commands.tickets, scope=Scope.SPACE)
    )
    registry.add(
        Command(
            "takeover",
            "takes conversation N over",
            desk_commands.takeover,
            scope=Scope.SPACE,
            usage="/takeover N",
        )
    )
    registry.add(
        Command(
            "resend",
            "sends message N to its customer again, when its delivery could not be confirmed",
            desk_commands.resend,
            scope=Scope.SPACE,
            usage="/resend N",
        )
    )


async def reset_conversation(ctx: CommandContext) -> str:
    """/reset: forget the conversation up to this command. In a group a
    customer forgets only their own part (their messages, the answers to
    them, their draft); the group's whole history is its admins' to wipe."""
    me = ctx.inbound.platform_user
    whole = not ctx.inbound.in_group or ctx.is_admin
    removed = await ctx.house.reset(
        ctx.conversation_id, upto_inbound=ctx.inbound_id, author=None if whole else me
    )
    await ctx.house.clear_draft(ctx.inbound.ref.key, author=me)
    if whole:
        return say("commands.reset_done", ctx.language, removed=removed)
    return say("commands.reset_own_done", ctx.language, removed=removed)


def _seconds(value: float | None, language: str) -> str:
    if value is None:
        return say("commands.stats_none", language)
    return say("commands.stats_seconds", language, value=value / 1000)


async def suggestion_stats(team: Team, tenant: str | None, language: str = "en") -> list[str]:
    """What agents did with suggested replies: the tenant's totals, then per agent."""
    tenants = None if tenant is None else [tenant]
    repo = team.repository.suggestions
    totals = await repo.outcomes(tenants, by="tenant")
    if not totals:
        return [say("copilot.stats_none", language)]
    sums = [sum(getattr(t, name) for t in totals) for name in _OUTCOMES]
    decided = sum(sums[:4])
    acceptance = (
        f"{100 * (sums[0] + sums[1]) / decided:.0f}%"
        if decided
        else say("copilot.stats_na", language)
    )
    lines = [
        say(
            "copilot.stats_head",
            language,
            **dict(zip(_OUTCOMES, sums, strict=True)),
            acceptance=acceptance,
        )
    ]
    for agent in await repo.outcomes(tenants, by="agent"):
        changed = (
            f"{100 * agent.changed:.0f}%"
            if agent.changed is not None
            else say("copilot.stats_na", language)
        )
        lines.append(
            say(
                "copilot.stats_agent",
                language,
                agent=agent.who or "?",
                sent=agent.sent,
                edited=agent.edited,
                changed=changed,
                discarded=agent.discarded,
                ignored=agent.ignored,
            )
        )
    return lines


_OUTCOMES = ("sent", "edited", "discarded", "ignored", "pending")


async def tenant_stats(ctx: CommandContext) -> str:
    """The caller's tenant's figures; owners may name another tenant or ``all``."""
    wanted = ctx.args.strip()
    tenant: str | None = ctx.tenant
    if wanted:
        if not ctx.is_owner:
            return say("commands.stats_own_only", ctx.language)
        tenant = None if wanted.lower() == "all" else wanted
    s = await ctx.team.repository.stats(tenant)

    if tenant is None:
        where = say("commands.stats_every_tenant", ctx.language)
    else:
        where = say(
            "commands.stats_tenant",
            ctx.language,
            tenant=tenant or say("commands.stats_shared", ctx.language),
        )
    n = s.model_answers
    tokens = s.prompt_tokens + s.completion_tokens
    per_answer = (
        say(
            "commands.stats_per_answer",
            ctx.language,
            tokens=tokens / n,
            seconds=s.model_seconds / n,
        )
        if n
        else say("commands.stats_per_answer_none", ctx.language)
    )
    timed = n and s.backend_timed == n
    timing = say(
        "commands.stats_timed_by_model" if timed else "commands.stats_timed_by_wall", ctx.language
    )
    rated = s.rated_good + s.rated_bad
    ratings = (
        say(
            "commands.stats_ratings",
            ctx.language,
            good=s.rated_good,
            bad=s.rated_bad,
            percent=100 * s.rated_good / rated,
        )
        if rated
        else say("commands.stats_no_ratings", ctx.language)
    )
    return "\n".join(
        [
            say("commands.stats_head", ctx.language, where=where),
            say("commands.stats_conversations", ctx.language, count=s.conversations),
            say(
                "commands.stats_messages",
                ctx.language,
                messages=s.messages,
                answers=s.answers,
                failed=s.failed,
            ),
            say(
                "commands.stats_latency",
                ctx.language,
                p50=_seconds(s.latency_p50_ms, ctx.language),
                p95=_seconds(s.latency_p95_ms, ctx.language),
            ),
            say(
                "commands.stats_model",
                ctx.language,
                answers=n,
                prompt=s.prompt_tokens,
                completion=s.completion_tokens,
                seconds=s.model_seconds,
            ),
            say(
                "commands.stats_per_answer_line", ctx.language, per_answer=per_answer, timing=timing
            ),
            ratings,
            *await suggestion_stats(ctx.team, tenant, ctx.language),
        ]
    )
