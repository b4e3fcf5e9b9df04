"""Chat commands of the support team: /role, /roles, /audit, /quota, /rate."""

from __future__ import annotations

from bot.commands import CommandContext, CommandRegistry, Handler
from bot.messages import say
from bot.team.access import Access, UserIdError, parse_user
from storage.team_repo import EACH_USER, TENANT, AuditEntry

AUDIT_MAX = 100


def _tenant_option(ctx: CommandContext, words: list[str]) -> tuple[str | None, list[str], str]:
    """``--tenant T`` (owners only) out of ``words``: (tenant, the rest, an error)."""
    if "--tenant" not in words:
        return ctx.tenant, words, ""
    at = words.index("--tenant")
    if not ctx.is_owner:
        return None, words, say("team.owners_only_elsewhere", ctx.language)
    if at + 1 >= len(words):
        return None, words, say("team.which_tenant", ctx.language)
    return words[at + 1], words[:at] + words[at + 2 :], ""


def _label(tenant: str, language: str) -> str:
    if tenant == "":
        return say("team.shared_faq", language)
    return say("team.tenant", language, tenant=tenant)


def register_team_commands(registry: CommandRegistry) -> None:
    """Add the team's commands to ``registry``, in the order help lists them."""
    for name, description, access, handler in _COMMANDS:
        registry.command(name, description, access=access, customer_runs=name in _CUSTOMER_RUNS)(
            handler
        )


async def _role(ctx: CommandContext) -> str:
    tenant, words, error = _tenant_option(ctx, ctx.args.split())
    if error or tenant is None:
        return error
    if len(words) < 2 or words[-1].lower() not in ("admin", "agent", "customer"):
        return say("team.role_usage", ctx.language)
    try:
        # Everything before the role, so that a display name with spaces is
        # refused as a name rather than misread.
        user = parse_user(ctx.inbound.ref.platform, tenant, " ".join(words[:-1]), ctx.language)
    except UserIdError as exc:
        return str(exc)
    if ctx.team.is_owner(user):
        return say("team.role_of_owner", ctx.language, user=user)
    if user == ctx.inbound.platform_user:
        return say("team.role_own", ctx.language)
    wanted = words[-1].lower()
    before = await ctx.team.repository.set_role(
        tenant, user, None if wanted == "customer" else wanted, by=ctx.inbound.platform_user
    )
    # Role names are the words /role takes; having none is being a customer.
    return say(
        "team.role_set",
        ctx.language,
        user=user,
        role=wanted,
        where=_label(tenant, ctx.language),
        before=before or "customer",
    )


async def _roles(ctx: CommandContext) -> str:
    tenant, _, error = _tenant_option(ctx, ctx.args.split())
    if error or tenant is None:
        return error
    grants = await ctx.team.repository.roles(tenant)
    lines = [say("team.roles_head", ctx.language, where=_label(tenant, ctx.language))]
    lines += [
        say(
            "team.roles_line",
            ctx.language,
            user=g.platform_user,
            role=g.role,
            by=g.granted_by or "?",
        )
        for g in grants
    ]
    if not grants:
        lines.append(say("team.roles_none", ctx.language))
    lines.append(say("team.roles_owners", ctx.language))
    return "\n".join(lines)


async def _audit(ctx: CommandContext) -> str:
    words = ctx.args.split()
    count = next((int(w) for w in words if w.isdigit()), 10)
    count = max(1, min(count, AUDIT_MAX))
    rest = [w for w in words if not w.isdigit()]
    tenant: str | None = ctx.tenant
    if rest:
        if not ctx.is_owner:
            return say("team.audit_own_only", ctx.language)
        tenant = None if rest[0].lower() == "all" else rest[0]
    entries = await ctx.team.repository.audit_entries(tenant=tenant, limit=count)
    if not entries:
        return say("team.audit_none", ctx.language)
    where = (
        say("team.every_tenant", ctx.language) if tenant is None else _label(tenant, ctx.language)
    )
    return "\n".join(
        [say("team.audit_head", ctx.language, count=len(entries), where=where)]
        + [_audit_line(e, show_tenant=tenant is None, language=ctx.language) for e in entries]
    )


async def _quota(ctx: CommandContext) -> str:
    tenant, words, error = _tenant_option(ctx, ctx.args.split())
    if error or tenant is None:
        return error
    if not words:
        return await _show_quota(ctx, tenant)
    if not ctx.is_admin:
        return say("team.quota_admins_only", ctx.language)
    which = words[0].lower()
    if which == "tenant" and len(words) == 2:
        subject, value = TENANT, words[1]
    elif which == "user" and len(words) == 3:
        if words[1] == EACH_USER:
            subject = EACH_USER
        else:
            try:
                subject = parse_user(ctx.inbound.ref.platform, tenant, words[1], ctx.language)
            except UserIdError as exc:
                return str(exc)
        value = words[2]
    else:
        return say("team.quota_usage", ctx.language)
    if value.lower() == "off":
        limit = None
    elif value.isdigit():
        limit = int(value)
    else:
        return say("team.quota_usage", ctx.language)
    await ctx.team.repository.set_quota(tenant, subject, limit, by=ctx.inbound.platform_user)
    who = {
        TENANT: say("team.quota_whole_tenant", ctx.language),
        EACH_USER: say("team.quota_each_user", ctx.language),
    }.get(subject, subject)
    amount = (
        say("team.quota_no_limit", ctx.language)
        if limit is None
        else say("team.quota_per_day", ctx.language, limit=limit)
    )
    return say(
        "team.quota_set", ctx.language, who=who, where=_label(tenant, ctx.language), amount=amount
    )


async def _rate(ctx: CommandContext) -> str:
    reply = await ctx.team.rate(ctx.inbound, ctx.conversation_id, ctx.args, language=ctx.language)
    return reply or say("team.rate_how", ctx.language)


# A customer whose conversation is with a person still rates the bot's answers.
_CUSTOMER_RUNS = frozenset({"rate"})

_COMMANDS: tuple[tuple[str, str, Access, Handler], ...] = (
    ("role", "team.command.role", Access.ADMIN, _role),
    ("roles", "team.command.roles", Access.ADMIN, _roles),
    ("audit", "team.command.audit", Access.ADMIN, _audit),
    ("quota", "team.command.quota", Access.EVERYONE, _quota),
    ("rate", "team.command.rate", Access.EVERYONE, _rate),
)


async def _show_quota(ctx: CommandContext, tenant: str) -> str:
    state = await ctx.team.quota(tenant, ctx.inbound.platform_user)

    def of(used: int, limit: int | None) -> str:
        if limit is None:
            return say("team.quota_used_unlimited", ctx.language, used=used)
        return say("team.quota_used_of", ctx.language, used=used, limit=limit)

    def line(who: str, usage: str) -> str:
        return say("team.quota_line", ctx.language, who=who, usage=usage)

    lines = [
        say("team.quota_head", ctx.language),
        line(say("team.quota_you", ctx.language), of(state.user_used, state.user_limit)),
        line(_label(tenant, ctx.language), of(state.tenant_used, state.tenant_limit)),
    ]
    if ctx.is_admin:
        limits = await ctx.team.repository.quotas(tenant)
        people = {k: v for k, v in limits.items() if k not in (TENANT, EACH_USER)}
        if EACH_USER in limits:
            per_day = say("team.quota_per_day", ctx.language, limit=limits[EACH_USER])
            lines.append(line(say("team.quota_each_user", ctx.language), per_day))
        lines += [
            line(who, say("team.quota_per_day", ctx.language, limit=n))
            for who, n in sorted(people.items())
        ]
        settings = ctx.team.settings
        if settings.daily_user_tokens or settings.daily_tenant_tokens:
            none = say("team.quota_none", ctx.language)
            lines.append(
                say(
                    "team.quota_defaults",
                    ctx.language,
                    user=settings.daily_user_tokens or none,
                    tenant=settings.daily_tenant_tokens or none,
                )
            )
    return "\n".join(lines)


def _audit_line(entry: AuditEntry, *, show_tenant: bool, language: str = "en") -> str:
    when = entry.created_at.strftime("%Y-%m-%d %H:%M")
    shared = say("team.shared", language)
    where = say("team.in_tenant", language, tenant=entry.tenant or shared) if show_tenant else ""
    details = ", ".join(f"{k}={v}" for k, v in entry.details.items() if v not in (None, ""))
    return say(
        "team.audit_line",
        language,
        when=when,
        where=where,
        actor=entry.actor,
        action=entry.action,
        target=f" {entry.target}" if entry.target else "",
        details=say("team.audit_details", language, details=details) if details else "",
    )
