"""Chat commands for the knowledge base: /faq, /mode, /persona, /draft.

``register_knowledge_commands(registry, kb)`` adds them to the manager's
registry. FAQ edits apply to the deployment-wide knowledge base unless the
admin adds ``--here``, which scopes them to the current tenant.
"""

from __future__ import annotations

import logging

from bot.commands import CommandContext, CommandRegistry
from bot.knowledge import drafting
from bot.knowledge.knowledge_base import MODES, KnowledgeBase
from bot.plans import Plan, ReviseDraft
from storage.knowledge_repo import GLOBAL, EntryInput

log = logging.getLogger(__name__)

FAQ_USAGE = (
    "Usage:\n"
    "/faq add <question> | <answer> [| <source>]\n"
    "/faq list [page]\n"
    "/faq remove <id>\n"
    "/faq search <question>\n"
    "Add --here to act on this workspace's own entries instead of the shared FAQ."
)
PAGE = 20


def _scope(ctx: CommandContext, args: str) -> tuple[str, str]:
    if " --here" in f" {args}":
        return ctx.inbound.ref.tenant, f" {args}".replace(" --here", " ").strip()
    return GLOBAL, args


def register_knowledge_commands(registry: CommandRegistry, kb: KnowledgeBase) -> None:
    @registry.command("faq", "manage the FAQ: add, list, remove, search", admin_only=True)
    async def faq(ctx: CommandContext) -> str:
        sub, _, rest = ctx.args.partition(" ")
        tenant, rest = _scope(ctx, rest.strip())
        sub = sub.lower()
        if sub == "add":
            parts = [p.strip() for p in rest.split("|")]
            if len(parts) < 2 or not parts[0] or not parts[1]:
                return "Write it as: /faq add <question> | <answer> [| <source>]"
            entry = EntryInput(
                question=parts[0],
                answer=parts[1],
                source=parts[2] if len(parts) > 2 else "",
            )
            result = await kb.add(entry, tenant=tenant)
            verb = "Added" if result.created else "Updated" if result.updated else "Unchanged:"
            stored = await kb.repository.get(tenant, entry.key)
            ref = stored.ref if stored is not None else "?"
            return f"{verb} FAQ entry {ref}: {entry.question}"
        if sub == "list":
            page = int(rest) if rest.isdigit() and int(rest) > 0 else 1
            entries = await kb.repository.entries(
                tenant=tenant, limit=PAGE, offset=(page - 1) * PAGE
            )
            if not entries:
                return "No FAQ entries here yet." if page == 1 else f"Page {page} is empty."
            lines = [f"FAQ entries (page {page}):"]
            lines += [f"{e.ref}: {e.question}" for e in entries]
            if len(entries) == PAGE:
                lines.append(f"More: /faq list {page + 1}")
            return "\n".join(lines)
        if sub == "remove":
            if not rest:
                return "Which one? /faq remove <id> (ids are shown by /faq list)"
            removed = await kb.remove(rest, tenant=tenant)
            if removed is None:
                return f"There is no FAQ entry {rest} here."
            return f"Removed FAQ entry {removed.ref}: {removed.question}"
        if sub == "search":
            if not rest:
                return "Search for what? /faq search <question>"
            hits = await kb.search(rest, tenant=ctx.inbound.ref.tenant, limit=5)
            if not hits:
                return "The FAQ is empty."
            decision = kb.decide_hits(hits)
            lines = [f"Best matches (I would answer: {decision.path}):"]
            lines += [f"{h.entry.ref} ({h.dense:.2f}): {h.entry.question}" for h in hits]
            return "\n".join(lines)
        return FAQ_USAGE

    @registry.command("mode", "answering mode: support, faq or assistant", admin_only=True)
    async def mode(ctx: CommandContext) -> str:
        args = ctx.args.split()
        tenant_wide = "--tenant" in args
        args = [a for a in args if a != "--tenant"]
        ref = ctx.inbound.ref
        scope = f"tenant:{ref.tenant}" if tenant_wide else f"conversation:{ref.key}"
        if not args:
            current = await kb.mode_for(ref.key, ref.tenant)
            return (
                f"Mode here: {current}. Set it with /mode support|faq|assistant "
                "(add --tenant for the whole workspace; /mode default to clear)."
            )
        choice = args[0].lower()
        if choice == "default":
            await kb.set_mode(scope, None)
            return "Mode cleared; " + (
                "the workspace default applies." if not tenant_wide else "support applies."
            )
        if choice not in MODES:
            return f"Unknown mode {choice!r}. Modes: {', '.join(MODES)}."
        await kb.set_mode(scope, choice)
        where = "for this workspace" if tenant_wide else "in this conversation"
        return f"Mode set to {choice} {where}."

    @registry.command("persona", "set the assistant's persona for this workspace", admin_only=True)
    async def persona(ctx: CommandContext) -> str:
        tenant = ctx.inbound.ref.tenant
        text = ctx.args.strip()
        if not text:
            current = await kb.persona(tenant)
            return (
                f"Current persona:\n{current}" if current else "No persona set."
            ) + "\nSet one with /persona <text>, remove it with /persona clear."
        if text.lower() == "clear":
            await kb.set_persona(tenant, None)
            return "Persona removed."
        if len(text) > 2000:
            return f"That persona is {len(text)} characters; keep it under 2000."
        await kb.set_persona(tenant, text)
        return "Persona saved. Drafts and grounded answers in this workspace will use it."

    @registry.command("draft", "draft a reply, announcement, social post, email or release note")
    async def draft(ctx: CommandContext) -> str | Plan:
        if not ctx.is_admin:
            role = await ctx.house.role_of(ctx.inbound.platform_user)
            if role not in ("agent", "admin"):
                return "Sorry, drafting is for the support team (agents and admins)."
        key = ctx.inbound.ref.key
        if ctx.args.strip().lower() in ("done", "close", "off"):
            await kb.set_draft(key, None)
            return "Draft closed. Nothing was sent."
        try:
            request = drafting.parse_request(ctx.args)
        except drafting.DraftError as exc:
            return str(exc)
        persona = await kb.persona(ctx.inbound.ref.tenant)
        return ReviseDraft(request, drafting.draft_messages(request, persona))
