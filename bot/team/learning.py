"""Agents' answers become knowledge: ``/learn`` in a ticket proposes the
customer's question and the agent's answer as an FAQ entry (or as another
phrasing of a named one); an admin approves or rejects it in one step; the gap
report groups what the knowledge base could not answer well."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from bot.messages import say
from bot.team.access import Access
from bot.team.service import Team
from storage.handoff_repo import HandoffRepository, Ticket
from storage.knowledge_repo import GLOBAL, EntryInput, FaqEntry
from storage.team_repo import GapQuestion, Proposal

if TYPE_CHECKING:
    from bot.knowledge.knowledge_base import KnowledgeBase

# Questions at least this similar (cosine, the knowledge base's embedder) are
# one gap in the report.
GAP_SIMILARITY = 0.7
LEARNED_SOURCE = say("team.learned_source")


async def learn(
    team: Team,
    tickets: HandoffRepository,
    ticket: Ticket,
    agent: str,
    args: str,
    language: str = "en",
) -> str:
    """Propose the ticket's last question and the agent's answer to it."""
    question, answer = await _exchange(tickets, ticket)
    if not answer:
        return say("team.learn_nothing_yet", language, id=ticket.id)
    if not question:
        return say("team.learn_no_question", language, id=ticket.id)
    tenant = ticket.customer_address.tenant
    target_ref = args.split()[0] if args.strip() else ""
    target_tenant = ""
    if target_ref:
        kb = team.knowledge
        entry = await find_entry(kb, tenant, target_ref) if kb is not None else None
        if entry is None:
            return say("team.learn_no_entry", language, ref=target_ref)
        target_tenant = entry.tenant
    proposal = await team.repository.propose(
        tenant=tenant,
        question=question,
        answer=answer,
        proposed_by=agent,
        target_ref=target_ref,
        target_tenant=target_tenant,
        ticket_id=ticket.id,
    )
    what = (
        say("team.learn_phrasing", language, ref=target_ref)
        if target_ref
        else say("team.learn_new_entry", language)
    )
    return say(
        "team.learn_proposed",
        language,
        what=what,
        id=proposal,
        question=_short(question),
        answer=_short(answer),
    )


async def _exchange(tickets: HandoffRepository, ticket: Ticket) -> tuple[str, str]:
    """The agent's last answer in the ticket and the customer's question before it."""
    events = await tickets.events(ticket.id)
    answer_at = next(
        (i for i in range(len(events) - 1, -1, -1) if events[i].kind == "to_customer"), None
    )
    if answer_at is None:
        return "", ""
    asked = [e.text for e in events[:answer_at] if e.kind == "from_customer" and e.text.strip()]
    if asked:
        return asked[-1].strip(), events[answer_at].text.strip()
    # Asked before the ticket opened: the last turn the ticket shows.
    turns = ticket.details.get("turns") or []
    said = [str(t.get("text", "")) for t in turns if t.get("role") == "user"]
    question = said[-1].strip() if said else ""
    return question, events[answer_at].text.strip()


async def ticket_question(tickets: HandoffRepository, ticket: Ticket) -> str:
    """What the customer of a ticket asked: the question it opened on, else their
    first message in it."""
    turns = ticket.details.get("turns") or []
    said = [str(t.get("text", "")).strip() for t in turns if t.get("role") == "user"]
    said = [s for s in said if s and not s.startswith("/")]
    if said:
        return said[-1]
    events = await tickets.events(ticket.id)
    return next((e.text.strip() for e in events if e.kind == "from_customer" and e.text), "")


async def find_entry(kb: KnowledgeBase, tenant: str, ref: str) -> FaqEntry | None:
    """The entry named ``ref`` that ``tenant`` sees: its own first, then the shared one."""
    return await kb.faq.entry(ref, tenant=tenant)


def may_decide(proposal: Proposal, access: Access, tenant: str) -> bool:
    """Owners decide anything; a tenant's admins decide its own proposals, except
    a new phrasing of a shared entry (the shared FAQ is the owners')."""
    if access >= Access.OWNER:
        return True
    if access < Access.ADMIN or proposal.tenant != tenant:
        return False
    return not (proposal.target_ref and proposal.target_tenant == GLOBAL)


async def approve(
    team: Team,
    kb: KnowledgeBase,
    proposal: Proposal,
    *,
    by: str,
    answer: str | None,
    language: str = "en",
) -> str:
    """Store the proposal in the knowledge base (searchable at once) and mark it approved."""
    final = answer if answer else proposal.answer
    if proposal.target_ref:
        entry = await find_entry(kb, proposal.tenant, proposal.target_ref)
        if entry is None or entry.tenant != proposal.target_tenant:
            return say("team.approve_gone", language, ref=proposal.target_ref, id=proposal.id)
        phrasings = tuple(dict.fromkeys([*entry.alternatives, proposal.question]))
        item = EntryInput(
            question=entry.question,
            answer=final if answer else entry.answer,
            alternatives=phrasings,
            tags=entry.tags,
            source=entry.source,
            external_id=entry.external_id,
        )
        tenant = entry.tenant
    else:
        item = EntryInput(question=proposal.question, answer=final, source=LEARNED_SOURCE)
        tenant = proposal.tenant
    await kb.add(item, tenant=tenant)
    stored = await kb.repository.get(tenant, item.key)
    ref = stored.ref if stored is not None else ""
    decided = await team.repository.decide(
        proposal.id, approved=True, by=by, entry_ref=ref, answer=answer or None
    )
    if decided is None:
        return say("team.approve_meanwhile", language, id=proposal.id, ref=ref)
    key = "team.approved_phrasing" if proposal.target_ref else "team.approved"
    return say(key, language, ref=ref, question=_short(proposal.question))


def pending_text(found: Sequence[Proposal], *, show_tenant: bool, language: str = "en") -> str:
    if not found:
        return say("team.pending_none", language)
    lines = [say("team.pending_head", language)]
    for p in found:
        where = (
            say("team.in_tenant", language, tenant=p.tenant or say("team.shared", language))
            if show_tenant
            else ""
        )
        what = say("team.pending_phrasing", language, ref=p.target_ref) if p.target_ref else ""
        lines.append(
            say(
                "team.pending_line",
                language,
                id=p.id,
                where=where,
                what=what,
                question=_short(p.question),
            )
        )
        lines.append(say("team.pending_answer", language, answer=_short(p.answer, 200)))
    lines.append(say("team.pending_foot", language))
    return "\n".join(lines)


async def gap_report(
    questions: Sequence[GapQuestion],
    kb: KnowledgeBase | None,
    *,
    limit: int = 10,
    language: str = "en",
) -> str:
    """Escalated and badly rated questions, similar ones together, most frequent first."""
    if not questions:
        return say("team.gaps_none", language)
    groups = await _group([q.question for q in questions], kb)
    lines = [say("team.gaps_head", language, questions=len(questions), groups=len(groups))]
    for members in groups[:limit]:
        escalated = sum(1 for i in members if questions[i].why == "escalated")
        bad = len(members) - escalated
        why = ", ".join(
            part
            for part in (
                say("team.gaps_escalated", language, count=escalated) if escalated else "",
                say("team.gaps_rated_bad", language, count=bad) if bad else "",
            )
            if part
        )
        head = _short(questions[members[0]].question)
        lines.append(say("team.gaps_line", language, count=len(members), question=head, why=why))
        others = list(dict.fromkeys(questions[i].question for i in members[1:]))
        others = [q for q in others if q != questions[members[0]].question][:2]
        lines += [say("team.gaps_also", language, question=_short(q)) for q in others]
    if len(groups) > limit:
        lines.append(say("team.gaps_more", language, count=len(groups) - limit))
    return "\n".join(lines)


async def _group(texts: Sequence[str], kb: KnowledgeBase | None) -> list[list[int]]:
    """Greedy grouping by cosine similarity to each group's first question."""
    if kb is None:
        by_text: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            by_text.setdefault(" ".join(text.lower().split()), []).append(i)
        groups = list(by_text.values())
    else:
        embedder = await kb.retriever.current_embedder()
        vectors = await asyncio.to_thread(embedder.embed, list(texts))
        heads: list[np.ndarray] = []
        groups = []
        for i, vector in enumerate(vectors):
            scores = [float(np.dot(vector, head)) for head in heads]
            best = int(np.argmax(scores)) if scores else -1
            if best >= 0 and scores[best] >= GAP_SIMILARITY:
                groups[best].append(i)
            else:
                heads.append(vector)
                groups.append([i])
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
