"""Chat commands for the knowledge base: /faq, /answer, /mode, /persona, /draft.

``register_knowledge_commands(registry, kb)`` adds them to the manager's
registry; ``KnowledgeCommands`` holds their handlers. The shared FAQ (tenant
"") is the owners': their edits go there unless they add ``--here``. A
tenant's admins edit their own tenant's entries, and approve what agents
learned there. Every edit is audited.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from bot.commands import CommandContext, CommandRegistry
from bot.knowledge import drafting
from bot.knowledge.knowledge_base import MODES, KnowledgeBase
from bot.knowledge.tuning import BackgroundTuner
from bot.language import detect_language
from bot.messages import say
from bot.plans import Plan, ReviseDraft, in_language
from bot.team import learning
from bot.team.access import Access
from storage.knowledge_repo import GLOBAL, EntryInput

log = logging.getLogger(__name__)

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
    commands = KnowledgeCommands(kb)
    for name, description, access, handler in (
        ("faq", "knowledge.command.faq", Access.ADMIN, commands.faq),
        # /faq is for admins and hidden from customers' menus, so the "did you
        # mean" buttons (and customers typing an option's id) use their own command.
        ("answer", "knowledge.command.answer", Access.EVERYONE, commands.answer),
        ("mode", "knowledge.command.mode", Access.ADMIN, commands.mode),
        ("persona", "knowledge.command.persona", Access.ADMIN, commands.persona),
        ("draft", "knowledge.command.draft", Access.AGENT, commands.draft),
    ):
        registry.command(name, description, access=access)(handler)


class KnowledgeCommands:
    """The handlers of /faq, /answer, /mode, /persona and /draft over one knowledge base."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        self.tuner = BackgroundTuner(kb)

    async def faq(self, ctx: CommandContext) -> str | Plan:
        sub, _, rest = ctx.args.partition(" ")
        sub = sub.lower()
        if sub == "answer":
            return await _answer(ctx, self.kb, rest.strip())
        if sub == "share" and ctx.is_owner:
            return await _share(ctx, self.kb, rest.strip())
        tenant, rest = _scope(ctx, rest.strip())
        if sub in ("pending", "approve", "reject", "gaps"):
            return await _learned(ctx, self.kb, sub, rest)
        edits = {
            "add": self._add,
            "list": self._list,
            "remove": self._remove,
            "search": self._search,
        }
        edit = edits.get(sub)
        return (
            await edit(ctx, tenant, rest)
            if edit is not None
            else say("knowledge.faq.usage", ctx.language)
        )

    async def _add(self, ctx: CommandContext, tenant: str, rest: str) -> str:
        kb = self.kb
        parts = [p.strip() for p in rest.split("|")]
        if len(parts) < 2 or not parts[0] or not parts[1]:
            return say("knowledge.faq.add_how", ctx.language)
        entry = EntryInput(
            question=parts[0],
            answer=parts[1],
            source=parts[2] if len(parts) > 2 else "",
        )
        result = await kb.add(entry, tenant=tenant)
        stored = await kb.repository.get(tenant, entry.key)
        ref = stored.ref if stored is not None else "?"
        if result.created or result.updated:
            await ctx.team.audit(
                tenant,
                ctx.inbound.platform_user,
                "faq.add",
                f"entry {ref}",
                {"question": entry.question[:200]},
            )
        only = say("knowledge.faq.this_workspace_only", ctx.language) if tenant != GLOBAL else ""
        adapting = ""
        # A tenant's own entries never shape the shared model.
        changed = bool(result.created or result.updated) and tenant == GLOBAL
        if changed and self.tuner.schedule():
            adapting = say("knowledge.faq.adapting", ctx.language)
        said = "added" if result.created else "updated" if result.updated else "unchanged"
        return say(
            f"knowledge.faq.{said}",
            ctx.language,
            ref=ref,
            only=only,
            question=entry.question,
            adapting=adapting,
        )

    async def _list(self, ctx: CommandContext, tenant: str, rest: str) -> str:
        page = int(rest) if rest.isdigit() and int(rest) > 0 else 1
        entries = await self.kb.repository.entries(
            tenant=tenant, limit=PAGE, offset=(page - 1) * PAGE
        )
        if not entries:
            if page == 1:
                return say("knowledge.faq.none_yet", ctx.language)
            return say("knowledge.faq.page_empty", ctx.language, page=page)
        lines = [say("knowledge.faq.page", ctx.language, page=page)]
        lines += [
            say("knowledge.faq.page_line", ctx.language, ref=e.ref, question=e.question)
            for e in entries
        ]
        if len(entries) == PAGE:
            lines.append(say("knowledge.faq.more", ctx.language, page=page + 1))
        return "\n".join(lines)

    async def _remove(self, ctx: CommandContext, tenant: str, rest: str) -> str:
        if not rest:
            return say("knowledge.faq.remove_which", ctx.language)
        removed = await self.kb.remove(rest, tenant=tenant)
        if removed is None:
            if tenant != GLOBAL and await learning.find_entry(self.kb, GLOBAL, rest) is not None:
                return say("knowledge.faq.shared_is_owners", ctx.language, ref=rest)
            return say("knowledge.faq.no_entry", ctx.language, ref=rest)
        await ctx.team.audit(
            tenant,
            ctx.inbound.platform_user,
            "faq.remove",
            f"entry {removed.ref}",
            {"question": removed.question[:200]},
        )
        return say(
            "knowledge.faq.removed", ctx.language, ref=removed.ref, question=removed.question
        )

    async def _search(self, ctx: CommandContext, tenant: str, rest: str) -> str:
        """The best passages for a question as the asker's tenant sees them."""
        if not rest:
            return say("knowledge.faq.search_what", ctx.language)
        found = await self.kb.lookup(rest, tenant=ctx.inbound.ref.tenant, limit=5, agents=True)
        passages = found.passages
        if not passages:
            return say("knowledge.faq.empty", ctx.language)
        decision = self.kb.decide_hits(passages, found.scope)
        lines = [say("knowledge.faq.matches", ctx.language, path=decision.path)]
        lines += [
            say("knowledge.faq.match_line", ctx.language, ref=p.ref, score=p.dense, title=p.title)
            for p in passages
        ]
        return "\n".join(lines)

    async def answer(self, ctx: CommandContext) -> str | Plan:
        return await _answer(ctx, self.kb, ctx.args.strip())

    async def mode(self, ctx: CommandContext) -> str:
        kb = self.kb
        args = ctx.args.split()
        tenant_wide = "--tenant" in args
        args = [a for a in args if a != "--tenant"]
        ref = ctx.inbound.ref
        scope = f"tenant:{ref.tenant}" if tenant_wide else f"conversation:{ref.key}"
        if not args:
            current = await kb.mode_for(ref.key, ref.tenant)
            return say("knowledge.mode.current", ctx.language, mode=current)
        choice = args[0].lower()
        if choice != "default" and choice not in MODES:
            return say(
                "knowledge.mode.unknown", ctx.language, choice=choice, modes=", ".join(MODES)
            )
        await ctx.team.audit(
            ref.tenant,
            ctx.inbound.platform_user,
            "mode",
            "workspace" if tenant_wide else f"conversation {ref.key}",
            {"to": choice},
        )
        if choice == "default":
            await kb.set_mode(scope, None)
            return say(
                "knowledge.mode.cleared_workspace"
                if tenant_wide
                else "knowledge.mode.cleared_here",
                ctx.language,
            )
        await kb.set_mode(scope, choice)
        where = "workspace" if tenant_wide else "here"
        return say(f"knowledge.mode.set_{where}", ctx.language, mode=choice)

    async def persona(self, ctx: CommandContext) -> str:
        kb = self.kb
        tenant = ctx.inbound.ref.tenant
        text = ctx.args.strip()
        if not text:
            current = await kb.persona(tenant)
            said = (
                say("knowledge.persona.current", ctx.language, persona=current)
                if current
                else say("knowledge.persona.none", ctx.language)
            )
            return said + say("knowledge.persona.how", ctx.language)
        actor = ctx.inbound.platform_user
        if text.lower() == "clear":
            await kb.set_persona(tenant, None)
            await ctx.team.audit(tenant, actor, "persona", "workspace", {"to": None})
            return say("knowledge.persona.removed", ctx.language)
        if len(text) > 2000:
            return say("knowledge.persona.too_long", ctx.language, length=len(text))
        await kb.set_persona(tenant, text)
        await ctx.team.audit(tenant, actor, "persona", "workspace", {"to": text[:200]})
        return say("knowledge.persona.saved", ctx.language)

    async def draft(self, ctx: CommandContext) -> str | Plan:
        kb = self.kb
        key = ctx.inbound.ref.key
        me = ctx.inbound.platform_user
        raw = await kb.open_draft(key)
        opened = drafting.Draft.loads(raw) if raw else None
        if opened is not None and opened.expired(time.time()):
            opened = None
        if opened is not None and not opened.belongs_to(me):
            # One draft per conversation, and it is its author's alone.
            return say("knowledge.draft.someone_elses", ctx.language)
        if ctx.args.strip().lower() in ("done", "close", "off"):
            await kb.set_draft(key, None)
            return say("knowledge.draft.closed", ctx.language)
        try:
            request = drafting.parse_request(ctx.args, ctx.language)
        except drafting.DraftError as exc:
            return str(exc)
        # Written in the language of its brief (the author's, when too short to tell).
        language = detect_language(request.brief) or ctx.language
        request = dataclasses.replace(request, author=me, updated=time.time(), language=language)
        persona = await kb.persona(ctx.inbound.ref.tenant)
        return ReviseDraft(request, drafting.draft_messages(request, persona))


async def _learned(ctx: CommandContext, kb: KnowledgeBase, sub: str, rest: str) -> str:
    """/faq pending | approve | reject | gaps."""
    team = ctx.team
    if sub == "gaps":
        tenant: str | None = ctx.tenant
        if rest.strip():
            if not ctx.is_owner:
                return say("knowledge.faq.gaps_own", ctx.language)
            tenant = None if rest.strip().lower() == "all" else rest.strip()
        questions = await team.repository.gap_questions(tenant=tenant)
        return await learning.gap_report(questions, kb, language=ctx.language)
    if sub == "pending":
        scope = None if ctx.is_owner else ctx.tenant
        found = await team.repository.proposals(tenant=scope)
        return learning.pending_text(found, show_tenant=scope is None, language=ctx.language)
    ident, _, edited = rest.partition("|")
    ident = ident.strip().lstrip("#")
    if not ident.isdigit():
        return say("knowledge.faq.decide_which", ctx.language, sub=sub)
    proposal = await team.repository.proposal(int(ident))
    if proposal is None or not learning.may_decide(proposal, ctx.access, ctx.tenant):
        return say("knowledge.faq.no_proposal", ctx.language, id=ident)
    if proposal.status != "pending":
        return say("knowledge.faq.already_decided", ctx.language, id=ident, status=proposal.status)
    actor = ctx.inbound.platform_user
    if sub == "reject":
        if await team.repository.decide(proposal.id, approved=False, by=actor) is None:
            return say("knowledge.faq.decided_meanwhile", ctx.language, id=ident)
        return say("knowledge.faq.rejected", ctx.language, id=ident)
    return await learning.approve(
        team, kb, proposal, by=actor, answer=edited.strip() or None, language=ctx.language
    )


async def _answer(ctx: CommandContext, kb: KnowledgeBase, ref: str) -> str | Plan:
    """A customer chose an entry (a "did you mean" option): its answer, verbatim."""
    ref = ref.split()[0] if ref else ""
    if not ref:
        return say("knowledge.faq.answer_which", ctx.language)
    inbound = ctx.inbound
    plan = await kb.choose(
        ref,
        tenant=inbound.ref.tenant,
        conversation_key=inbound.ref.key,
        user=inbound.platform_user,
    )
    if plan is None:
        return say("knowledge.faq.no_entry", ctx.language, ref=ref)
    # In the customer's language: its version of the entry, else a note about the original's.
    return in_language(kb.in_versions(plan, ctx.language), ctx.language)


async def _share(ctx: CommandContext, kb: KnowledgeBase, arg: str) -> str:
    """Owners make a phrasing one workspace taught visible to every workspace."""
    if not arg.isdigit():
        mine = await kb.repository.phrasings(tenant=ctx.tenant)
        if not mine:
            return say("knowledge.faq.no_phrasings", ctx.language)
        lines = [say("knowledge.faq.phrasings", ctx.language)]
        lines += [
            say("knowledge.faq.phrasing_line", ctx.language, id=p.id, text=p.text, entry=p.entry_id)
            for p in mine[-PAGE:]
        ]
        return "\n".join(lines)
    if not await kb.repository.share_phrasing(int(arg)):
        return say("knowledge.faq.no_phrasing", ctx.language, id=arg)
    kb.retriever.invalidate()
    await ctx.team.audit(ctx.tenant, ctx.inbound.platform_user, "faq.share", f"phrasing {arg}", {})
    return say("knowledge.faq.shared", ctx.language, id=arg)
