"""Chat commands for the knowledge base: /faq, /mode, /persona, /draft.

``register_knowledge_commands(registry, kb)`` adds them to the manager's
registry. The shared FAQ (tenant "") is the owners': their edits go there
unless they add ``--here``. A tenant's admins edit their own tenant's entries,
and approve what agents learned there. Every edit is audited.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from bot.commands import CommandContext, CommandRegistry
from bot.knowledge import drafting
from bot.knowledge.knowledge_base import MODES, KnowledgeBase
from bot.knowledge.tuning import BackgroundTuner
from bot.plans import Plan, ReviseDraft
from bot.team import learning
from bot.team.access import Access
from storage.knowledge_repo import GLOBAL, EntryInput

log = logging.getLogger(__name__)

FAQ_USAGE = (
    "Usage:\n"
    "/faq add <question> | <answer> [| <source>]\n"
    "/faq list [page]\n"
    "/faq remove <id>\n"
    "/faq search <question>\n"
    "/faq pending · /faq approve <id> [| <edited answer>] · /faq reject <id>\n"
    "/faq gaps (questions the FAQ did not answer well)\n"
    "/faq share <phrasing id> (owners: a workspace's learned phrasing for everyone)\n"
    "Admins edit this workspace's own entries; owners edit the shared FAQ, or this "
    "workspace's with --here."
)
PAGE = 20


def _scope(ctx: CommandContext, args: str) -> tuple[str, str]:
    """Which entries an edit acts on: owners the shared FAQ (``--here``: this
    tenant's), a tenant's admins always their own tenant's."""
    here = " --here" in f" {args}"
    rest = f" {args}".replace(" --here", " ").strip()
    if here or not ctx.is_owner:
        return ctx.tenant, rest
    return GLOBAL, rest


def register_knowledge_commands(registry: CommandRegistry, kb: KnowledgeBase) -> None:
    tuner = BackgroundTuner(kb)

    @registry.command(
        "faq",
        "manage the FAQ: add, list, remove, search, pending, approve, reject, gaps",
        access=Access.ADMIN,
    )
    async def faq(ctx: CommandContext) -> str | Plan:
        sub, _, rest = ctx.args.partition(" ")
        sub = sub.lower()
        if sub == "answer":
            return await _answer(ctx, kb, rest.strip())
        if sub == "share" and ctx.is_owner:
            return await _share(ctx, kb, rest.strip())
        tenant, rest = _scope(ctx, rest.strip())
        actor = ctx.inbound.platform_user
        if sub in ("pending", "approve", "reject", "gaps"):
            return await _learned(ctx, kb, sub, rest)
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
            if result.created or result.updated:
                await ctx.team.audit(
                    tenant, actor, "faq.add", f"entry {ref}", {"question": entry.question[:200]}
                )
            only = " (this workspace only)" if tenant != GLOBAL else ""
            adapting = ""
            # A tenant's own entries never shape the shared model.
            changed = bool(result.created or result.updated) and tenant == GLOBAL
            if changed and tuner.schedule():
                adapting = (
                    "\nThe search model adapts to the new entries in the background in a "
                    "few minutes; answers use the current one meanwhile."
                )
            return f"{verb} FAQ entry {ref}{only}: {entry.question}{adapting}"
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
                if tenant != GLOBAL and await learning.find_entry(kb, GLOBAL, rest) is not None:
                    return f"FAQ entry {rest} is in the shared FAQ, which only owners edit."
                return f"There is no FAQ entry {rest} here."
            await ctx.team.audit(
                tenant,
                actor,
                "faq.remove",
                f"entry {removed.ref}",
                {"question": removed.question[:200]},
            )
            return f"Removed FAQ entry {removed.ref}: {removed.question}"
        if sub == "search":
            if not rest:
                return "Search for what? /faq search <question>"
            found = await kb.lookup(rest, tenant=ctx.inbound.ref.tenant, limit=5)
            hits = found.hits
            if not hits:
                return "The FAQ is empty."
            decision = kb.decide_hits(hits, found.scope)
            lines = [f"Best matches (I would answer: {decision.path}):"]
            lines += [f"{h.entry.ref} ({h.dense:.2f}): {h.entry.question}" for h in hits]
            return "\n".join(lines)
        return FAQ_USAGE

    # /faq is for admins and hidden from customers' menus, so the "did you
    # mean" buttons (and customers typing an option's id) use their own command.
    @registry.command("answer", "the answer to an FAQ entry I suggested: /answer <id>")
    async def answer(ctx: CommandContext) -> str | Plan:
        return await _answer(ctx, kb, ctx.args.strip())

    @registry.command(
        "mode",
        "answering mode: support, faq or assistant (--tenant: the whole workspace)",
        access=Access.ADMIN,
    )
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
        if choice != "default" and choice not in MODES:
            return f"Unknown mode {choice!r}. Modes: {', '.join(MODES)}."
        await ctx.team.audit(
            ref.tenant,
            ctx.inbound.platform_user,
            "mode",
            "workspace" if tenant_wide else f"conversation {ref.key}",
            {"to": choice},
        )
        if choice == "default":
            await kb.set_mode(scope, None)
            return "Mode cleared; " + (
                "the workspace default applies." if not tenant_wide else "support applies."
            )
        await kb.set_mode(scope, choice)
        where = "for this workspace" if tenant_wide else "in this conversation"
        return f"Mode set to {choice} {where}."

    @registry.command(
        "persona", "set the assistant's persona for this workspace", access=Access.ADMIN
    )
    async def persona(ctx: CommandContext) -> str:
        tenant = ctx.inbound.ref.tenant
        text = ctx.args.strip()
        if not text:
            current = await kb.persona(tenant)
            return (
                f"Current persona:\n{current}" if current else "No persona set."
            ) + "\nSet one with /persona <text>, remove it with /persona clear."
        actor = ctx.inbound.platform_user
        if text.lower() == "clear":
            await kb.set_persona(tenant, None)
            await ctx.team.audit(tenant, actor, "persona", "workspace", {"to": None})
            return "Persona removed."
        if len(text) > 2000:
            return f"That persona is {len(text)} characters; keep it under 2000."
        await kb.set_persona(tenant, text)
        await ctx.team.audit(tenant, actor, "persona", "workspace", {"to": text[:200]})
        return "Persona saved. Drafts and grounded answers in this workspace will use it."

    @registry.command(
        "draft",
        "draft a reply, announcement, social post, email or release note",
        access=Access.AGENT,
    )
    async def draft(ctx: CommandContext) -> str | Plan:
        key = ctx.inbound.ref.key
        me = ctx.inbound.platform_user
        raw = await kb.open_draft(key)
        opened = drafting.Draft.loads(raw) if raw else None
        if opened is not None and opened.expired(time.time()):
            opened = None
        if opened is not None and not opened.belongs_to(me):
            # One draft per conversation, and it is its author's alone.
            return (
                "Someone else's draft is open in this conversation; only they can revise "
                "or close it (it expires a day after its last change, and their /reset removes it)."
            )
        if ctx.args.strip().lower() in ("done", "close", "off"):
            await kb.set_draft(key, None)
            return "Draft closed. Nothing was sent."
        try:
            request = drafting.parse_request(ctx.args)
        except drafting.DraftError as exc:
            return str(exc)
        request = dataclasses.replace(request, author=me, updated=time.time())
        persona = await kb.persona(ctx.inbound.ref.tenant)
        return ReviseDraft(request, drafting.draft_messages(request, persona))


async def _learned(ctx: CommandContext, kb: KnowledgeBase, sub: str, rest: str) -> str:
    """/faq pending | approve | reject | gaps."""
    team = ctx.team
    if sub == "gaps":
        tenant: str | None = ctx.tenant
        if rest.strip():
            if not ctx.is_owner:
                return "Admins see their own workspace's gaps: /faq gaps."
            tenant = None if rest.strip().lower() == "all" else rest.strip()
        return await learning.gap_report(await team.repository.gap_questions(tenant=tenant), kb)
    if sub == "pending":
        scope = None if ctx.is_owner else ctx.tenant
        found = await team.repository.proposals(tenant=scope)
        return learning.pending_text(found, show_tenant=scope is None)
    ident, _, edited = rest.partition("|")
    ident = ident.strip().lstrip("#")
    if not ident.isdigit():
        return f"Which one? /faq {sub} ID (ids are shown by /faq pending)."
    proposal = await team.repository.proposal(int(ident))
    if proposal is None or not learning.may_decide(proposal, ctx.access, ctx.tenant):
        return f"There is no learned answer #{ident} for you to decide."
    if proposal.status != "pending":
        return f"Learned answer #{ident} was already {proposal.status}."
    actor = ctx.inbound.platform_user
    if sub == "reject":
        if await team.repository.decide(proposal.id, approved=False, by=actor) is None:
            return f"Learned answer #{ident} was decided meanwhile."
        return f"Rejected learned answer #{ident}."
    return await learning.approve(team, kb, proposal, by=actor, answer=edited.strip() or None)


async def _answer(ctx: CommandContext, kb: KnowledgeBase, ref: str) -> str | Plan:
    """A customer chose an entry (a "did you mean" option): its answer, verbatim."""
    ref = ref.split()[0] if ref else ""
    if not ref:
        return "Which one? /faq answer <id>"
    inbound = ctx.inbound
    plan = await kb.choose(
        ref,
        tenant=inbound.ref.tenant,
        conversation_key=inbound.ref.key,
        user=inbound.platform_user,
    )
    return plan if plan is not None else f"There is no FAQ entry {ref} here."


async def _share(ctx: CommandContext, kb: KnowledgeBase, arg: str) -> str:
    """Owners make a phrasing one workspace taught visible to every workspace."""
    if not arg.isdigit():
        mine = await kb.repository.phrasings(tenant=ctx.tenant)
        if not mine:
            return "No learned phrasings in this workspace."
        lines = ["Learned phrasings here (share one with /faq share <id>):"]
        lines += [f"{p.id}: {p.text} (entry {p.entry_id})" for p in mine[-PAGE:]]
        return "\n".join(lines)
    if not await kb.repository.share_phrasing(int(arg)):
        return f"There is no learned phrasing {arg}."
    kb.retriever.invalidate()
    await ctx.team.audit(ctx.tenant, ctx.inbound.platform_user, "faq.share", f"phrasing {arg}", {})
    return f"Phrasing {arg} is now used for every workspace."
