"""The console's learned answers: what agents proposed with ``/learn``, approved or
rejected here as ``/faq approve|reject`` do."""

from __future__ import annotations

import logging

from aiohttp import web

from adapters.webconsole.pages import Room, _redirect, _tenant
from bot.knowledge.importer import MAX_ANSWER_CHARS
from bot.messages import say
from bot.team import learning
from storage.knowledge_repo import GLOBAL, FaqEntry

log = logging.getLogger(__name__)


class LearnedPages(Room):
    """The learned answers waiting for a decision, and the decision."""

    async def learned(self, request: web.Request) -> web.StreamResponse:
        found = await self.team.repository.proposals(tenant=_tenant(request), limit=200)
        targets: dict[int, FaqEntry | None] = {}
        kb = self.knowledge
        if kb is not None:
            # Each tenant's entries are read once, however many proposals name one.
            seen: dict[str, dict[str, FaqEntry]] = {}
            for p in found:
                if not p.target_ref:
                    continue
                for scope in dict.fromkeys((p.tenant, GLOBAL)):
                    if scope not in seen:
                        entries = await kb.repository.entries(tenant=scope)
                        seen[scope] = {e.ref: e for e in entries}
                targets[p.id] = seen[p.tenant].get(p.target_ref) or seen[GLOBAL].get(p.target_ref)
        return self._render(
            request,
            "learned.html",
            nav="knowledge",
            proposals=found,
            targets=targets,
            available=kb is not None,
            actor=self.viewer(request).actor,
            **await self._page_values(request),
        )

    async def decide_learned(self, request: web.Request) -> web.StreamResponse:
        """Approve (with the answer as edited) or reject a learned answer, as
        ``/faq approve|reject`` do: searchable at once, audited."""
        kb = self.knowledge
        form = request["form"]
        proposal_id = int(request.match_info["id"])
        back = "/console/knowledge/learned"
        language = self.language(request)
        if kb is None:
            return web.json_response(
                {"error": say("console.knowledge.unavailable", language)}, status=503
            )
        proposal = await self.team.repository.proposal(proposal_id)
        if proposal is None:
            raise web.HTTPNotFound(text=say("console.learned.missing", language))
        if not self.reaches(request, proposal.tenant):
            return await self._forbidden(
                request, say("console.learned.what", language, id=proposal_id)
            )
        if proposal.status != "pending":
            status = say(
                "console.learned.approved"
                if proposal.status == "approved"
                else "console.learned.rejected",
                language,
            )
            self._say(
                request, say("console.learned.already", language, id=proposal_id, status=status)
            )
            return _redirect(back)
        actor = self.viewer(request).actor
        if request.match_info["decision"] == "reject":
            if await self.team.repository.decide(proposal.id, approved=False, by=actor) is None:
                said = say("console.learned.meanwhile", language, id=proposal_id)
            else:
                said = say("console.learned.rejected_one", language, id=proposal_id)
        else:
            answer = str(form.get("answer", "")).strip().replace("\r\n", "\n")
            if not answer or len(answer) > MAX_ANSWER_CHARS:
                self._say(request, say("console.learned.length", language, most=MAX_ANSWER_CHARS))
                return _redirect(back)
            # Unchanged, a new phrasing keeps its entry's answer (as /faq approve ID).
            edited = answer if answer != proposal.answer.strip() else None
            said = await learning.approve(
                self.team, kb, proposal, by=actor, answer=edited, language=language
            )
        log.info(
            "console: learned answer #%d %sd by %s",
            proposal_id,
            request.match_info["decision"],
            actor,
        )
        self._say(request, said)
        return _redirect(back)
