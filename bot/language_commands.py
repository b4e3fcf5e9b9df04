"""``/language`` (a tenant's default language for customers whose own cannot
be told) and ``/translate`` (a machine translation for an agent in a ticket)."""

from __future__ import annotations

from bot.commands import Command, CommandContext, CommandRegistry, Scope
from bot.handoff.desk import customer_language
from bot.language import (
    SUPPORTED_LANGUAGES,
    Languages,
    detect_language,
    parse_language,
    translation_messages,
)
from bot.messages import say
from bot.plans import Plan, Translate

CLEAR = ("default", "clear", "off")


def _named(code: str) -> str:
    return SUPPORTED_LANGUAGES.get(code, code)


def register_language_commands(registry: CommandRegistry, languages: Languages) -> None:
    """``/language`` for everyone to read and admins to set; ``/translate`` in tickets."""

    @registry.command("language", "language.command")
    async def language(ctx: CommandContext) -> str:
        platform, tenant = ctx.inbound.ref.platform, ctx.tenant
        raw = ctx.args.strip()
        if raw and not ctx.is_admin:
            return say("language.admins_only", ctx.language)
        codes = ", ".join(SUPPORTED_LANGUAGES)
        if not raw:
            own = await languages.of_tenant(platform, tenant)
            code = own if own in SUPPORTED_LANGUAGES else languages.default
            where = say(
                "language.where_tenant" if own == code else "language.where_deployment",
                ctx.language,
            )
            return say(
                "language.current",
                ctx.language,
                language=_named(code),
                code=code,
                where=where,
                codes=codes,
            )
        if raw.lower() in CLEAR:
            await languages.clear_tenant(platform, tenant)
            code = languages.default
            return say("language.cleared", ctx.language, language=_named(code), code=code)
        chosen = parse_language(raw)
        if chosen is None:
            return say("language.unknown", ctx.language, raw=raw, codes=codes)
        await languages.set_tenant(platform, tenant, chosen, by=ctx.inbound.platform_user)
        await ctx.team.audit(
            tenant, ctx.inbound.platform_user, "language.set", details={"language": chosen}
        )
        return say("language.set", ctx.language, language=_named(chosen), code=chosen)

    async def translate(ctx: CommandContext) -> str | Plan:
        support = ctx.support
        assert support is not None and support.ticket is not None  # Scope.TICKET
        ticket = support.ticket
        address = ticket.customer_address
        customer = (
            customer_language(ticket)
            if ticket.details.get("language")
            else await languages.fallback(ticket.conversation_id, address.platform, address.tenant)
        )
        # The agents read their tenant's /language (the support space's), as
        # every other text in a ticket; ``ctx.language`` is that one here.
        agents = ctx.language
        text = ctx.args.strip()
        if text:
            source = detect_language(text) or ctx.language
            heading = say("translate.for_customer", ctx.language, target=_named(customer))
            target = customer
        else:
            text = await support.records.last_customer_text(ticket.conversation_id)
            if not text:
                return say("translate.nothing", ctx.language, id=ticket.id)
            source = detect_language(text) or customer
            target = agents if agents != source else ctx.language
            heading = say(
                "translate.of_customer",
                ctx.language,
                source=_named(source),
                target=_named(target),
            )
        return Translate(heading, translation_messages(text, source=source, target=target))

    registry.add(
        Command(
            "translate",
            "translate.command",
            translate,
            scope=Scope.TICKET,
            usage="/translate [TEXT]",
        )
    )
