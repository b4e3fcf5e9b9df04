"""``/desk``: a tenant's admin chooses, from inside the tenant, where its
customers' tickets go.

``/desk here`` makes the chat it is written in (a Telegram group, a Slack
channel) the tenant's support space; ``/desk off`` turns the help desk off
for the tenant (its customers are told nobody can be reached here);
``/desk default`` leaves it to the deployment's settings again; ``/desk``
alone says what holds now. The choice is stored (every worker sees it), takes
precedence over ``DESKMATE_HANDOFF_CHAT`` for that tenant, and is audited in
the tenant's audit trail.
"""

from __future__ import annotations

from bot.commands import CommandContext, CommandRegistry
from bot.handoff.desk import HelpDesk
from bot.handoff.spaces import chosen_space
from bot.messages import say
from bot.team.access import Access
from bot.types import Inbound


def register_desk_command(registry: CommandRegistry, desk: HelpDesk) -> None:
    @registry.command(
        "desk",
        "choose this workspace's support space: /desk here, /desk off, /desk default",
        access=Access.ADMIN,
    )
    async def desk_(ctx: CommandContext) -> str:
        return await choose(desk, ctx)


async def choose(desk: HelpDesk, ctx: CommandContext) -> str:
    """What ``/desk`` does with its argument; the text is for the admin."""
    if not desk.connected:
        return say("handoff.desk_off_deployment", ctx.language)
    ref = ctx.inbound.ref
    who = ctx.inbound.platform_user
    spaces = desk.spaces
    wanted = ctx.args.strip().lower()
    if wanted == "":
        return await current(desk, ctx.inbound, ctx.language)
    if wanted == "here":
        if not can_host(ctx.inbound):
            return say("handoff.desk_not_here", ctx.language)
        deployment = desk.settings.space_of(ref.platform, ref.tenant, ref.chat)
        if deployment is not None:
            return say("handoff.desk_deployment_space", ctx.language, space=deployment.key)
        await spaces.choose(ref.platform, ref.tenant, chat=ref.chat, by=who)
        space = await spaces.for_tenant(ref.platform, ref.tenant)
        target = space.key if space is not None else ref.chat
        await ctx.team.audit(ref.tenant, who, "desk.here", target, {"platform": ref.platform})
        return say("handoff.desk_set", ctx.language)
    if wanted == "off":
        await spaces.choose(ref.platform, ref.tenant, chat="", by=who)
        await ctx.team.audit(ref.tenant, who, "desk.off", "", {"platform": ref.platform})
        return say("handoff.desk_turned_off", ctx.language)
    if wanted == "default":
        removed = await spaces.unchoose(ref.platform, ref.tenant)
        await ctx.team.audit(
            ref.tenant, who, "desk.default", "", {"platform": ref.platform, "had": removed}
        )
        return say(
            "handoff.desk_default", ctx.language, now=await current(desk, ctx.inbound, ctx.language)
        )
    return say("handoff.desk_usage", ctx.language)


async def current(desk: HelpDesk, inbound: Inbound, language: str = "en") -> str:
    """Where the tenant's tickets go now, and why."""
    ref = inbound.ref
    choice = await desk.spaces.choices.get(ref.platform, ref.tenant)
    if choice is not None:
        space = chosen_space(choice)
        if space is None:
            return say("handoff.desk_shows_off", language, by=choice.set_by)
        return say("handoff.desk_shows_own", language, space=space.key, by=choice.set_by)
    deployment = desk.settings.space_for(ref.platform, ref.tenant)
    if deployment is None:
        return say("handoff.desk_shows_none", language)
    return say("handoff.desk_shows_env", language, space=deployment.key)


def can_host(inbound: Inbound) -> bool:
    """Whether a ticket can be posted in the chat: a Telegram group or a Slack
    channel, not a direct message or the web chat."""
    ref = inbound.ref
    if ref.platform == "telegram":
        return ref.chat.startswith("-")
    if ref.platform == "slack":
        return ref.chat[:1] in ("C", "G")
    return False
