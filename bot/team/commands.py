"""Chat commands of the support team: /role, /roles, /audit, /quota, /rate."""

from __future__ import annotations

from bot.commands import CommandContext, CommandRegistry, Handler
from bot.team.access import Access, UserIdError, parse_user
from storage.team_repo import EACH_USER, TENANT, AuditEntry

ROLE_USAGE = (
    "Usage: /role USER admin|agent|customer (customer removes the role). USER is the "
    "person's platform id: a Telegram user id, a Slack member id (U…) or an @-mention."
)
QUOTA_USAGE = (
    "Usage: /quota (today's usage and limits); admins: /quota user USER N|off "
    "(USER * for everyone without a limit of their own), /quota tenant N|off. "
    "N is tokens a day."
)
AUDIT_MAX = 100


def _tenant_option(ctx: CommandContext, words: list[str]) -> tuple[str | None, list[str], str]:
    """``--tenant T`` (owners only) out of ``words``: (tenant, the rest, an error)."""
    if "--tenant" not in words:
        return ctx.tenant, words, ""
    at = words.index("--tenant")
    if not ctx.is_owner:
        return None, words, "Only owners act on another tenant; leave out --tenant."
    if at + 1 >= len(words):
        return None, words, "Which tenant? --tenant TENANT"
    return words[at + 1], words[:at] + words[at + 2 :], ""


def _label(tenant: str) -> str:
    return "the shared FAQ" if tenant == "" else f"tenant {tenant}"


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
        return ROLE_USAGE
    try:
        # Everything before the role, so that a display name with spaces is
        # refused as a name rather than misread.
        user = parse_user(ctx.inbound.ref.platform, tenant, " ".join(words[:-1]))
    except UserIdError as exc:
        return str(exc)
    if ctx.team.is_owner(user):
        return f"{user} is an owner (DESKMATE_ADMINS); /role does not change owners."
    if user == ctx.inbound.platform_user:
        return "You can't change your own role; ask another admin or an owner."
    wanted = words[-1].lower()
    before = await ctx.team.repository.set_role(
        tenant, user, None if wanted == "customer" else wanted, by=ctx.inbound.platform_user
    )
    return f"{user} is now {wanted} in {_label(tenant)} (was {before or 'customer'})."


async def _roles(ctx: CommandContext) -> str:
    tenant, _, error = _tenant_option(ctx, ctx.args.split())
    if error or tenant is None:
        return error
    grants = await ctx.team.repository.roles(tenant)
    lines = [f"Roles in {_label(tenant)}:"]
    lines += [f"{g.platform_user}: {g.role} (by {g.granted_by or '?'})" for g in grants]
    if not grants:
        lines.append("nobody yet; everyone is a customer (owners aside).")
    lines.append("Owners (DESKMATE_ADMINS) act everywhere.")
    return "\n".join(lines)


async def _audit(ctx: CommandContext) -> str:
    words = ctx.args.split()
    count = next((int(w) for w in words if w.isdigit()), 10)
    count = max(1, min(count, AUDIT_MAX))
    rest = [w for w in words if not w.isdigit()]
    tenant: str | None = ctx.tenant
    if rest:
        if not ctx.is_owner:
            return "Admins see their own workspace's audit trail: /audit [N]."
        tenant = None if rest[0].lower() == "all" else rest[0]
    entries = await ctx.team.repository.audit_entries(tenant=tenant, limit=count)
    if not entries:
        return "No staff actions recorded here yet."
    where = "every tenant" if tenant is None else _label(tenant)
    return "\n".join(
        [f"Last {len(entries)} staff actions in {where}:"]
        + [_audit_line(e, show_tenant=tenant is None) for e in entries]
    )


async def _quota(ctx: CommandContext) -> str:
    tenant, words, error = _tenant_option(ctx, ctx.args.split())
    if error or tenant is None:
        return error
    if not words:
        return await _show_quota(ctx, tenant)
    if not ctx.is_admin:
        return "Only admins change quotas; /quota shows yours."
    which = words[0].lower()
    if which == "tenant" and len(words) == 2:
        subject, value = TENANT, words[1]
    elif which == "user" and len(words) == 3:
        if words[1] == EACH_USER:
            subject = EACH_USER
        else:
            try:
                subject = parse_user(ctx.inbound.ref.platform, tenant, words[1])
            except UserIdError as exc:
                return str(exc)
        value = words[2]
    else:
        return QUOTA_USAGE
    if value.lower() == "off":
        limit = None
    elif value.isdigit():
        limit = int(value)
    else:
        return QUOTA_USAGE
    await ctx.team.repository.set_quota(tenant, subject, limit, by=ctx.inbound.platform_user)
    who = {TENANT: "the whole tenant", EACH_USER: "each user"}.get(subject, subject)
    amount = "no limit" if limit is None else f"{limit} tokens a day"
    return f"Quota for {who} in {_label(tenant)}: {amount}."


async def _rate(ctx: CommandContext) -> str:
    reply = await ctx.team.rate(ctx.inbound, ctx.conversation_id, ctx.args)
    return reply or "Rate with /rate good, or /rate bad and what was missing."


# A customer whose conversation is with a person still rates the bot's answers.
_CUSTOMER_RUNS = frozenset({"rate"})

_COMMANDS: tuple[tuple[str, str, Access, Handler], ...] = (
    ("role", "give someone a role here: /role USER admin|agent|customer", Access.ADMIN, _role),
    ("roles", "list the admins and agents here", Access.ADMIN, _roles),
    ("audit", "the last staff actions here: /audit [N]", Access.ADMIN, _audit),
    ("quota", "today's model usage and limits", Access.EVERYONE, _quota),
    ("rate", "rate my last answer: /rate good, or /rate bad COMMENT", Access.EVERYONE, _rate),
)


async def _show_quota(ctx: CommandContext, tenant: str) -> str:
    state = await ctx.team.quota(tenant, ctx.inbound.platform_user)

    def of(used: int, limit: int | None) -> str:
        return f"{used} tokens" + (f" of {limit}" if limit is not None else " (no limit)")

    lines = [
        "Model usage today (UTC):",
        f"you: {of(state.user_used, state.user_limit)}",
        f"{_label(tenant)}: {of(state.tenant_used, state.tenant_limit)}",
    ]
    if ctx.is_admin:
        limits = await ctx.team.repository.quotas(tenant)
        people = {k: v for k, v in limits.items() if k not in (TENANT, EACH_USER)}
        if EACH_USER in limits:
            lines.append(f"each user: {limits[EACH_USER]} tokens a day")
        lines += [f"{who}: {n} tokens a day" for who, n in sorted(people.items())]
        settings = ctx.team.settings
        if settings.daily_user_tokens or settings.daily_tenant_tokens:
            lines.append(
                "defaults from the settings: "
                f"{settings.daily_user_tokens or 'none'} per user, "
                f"{settings.daily_tenant_tokens or 'none'} per tenant"
            )
    return "\n".join(lines)


def _audit_line(entry: AuditEntry, *, show_tenant: bool) -> str:
    when = entry.created_at.strftime("%Y-%m-%d %H:%M")
    where = f" [{entry.tenant or 'shared'}]" if show_tenant else ""
    details = ", ".join(f"{k}={v}" for k, v in entry.details.items() if v not in (None, ""))
    target = f" {entry.target}" if entry.target else ""
    return f"{when}{where} {entry.actor} {entry.action}{target}" + (
        f" ({details})" if details else ""
    )
