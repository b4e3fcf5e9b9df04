"""The console's knowledge pages: the FAQ's entries, their export, the questions
it could not answer, and trying a question against it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from adapters.webconsole.pages import MAX_PERIOD_DAYS, Room, _int, _redirect, _tenant
from adapters.webconsole.reports import group_gaps
from bot.knowledge.export import EXPORT_FORMATS, export_entries
from bot.knowledge.importer import MAX_ANSWER_CHARS, MAX_QUESTION_CHARS
from bot.messages import say
from bot.plans import Escalate, Grounded, Verbatim
from storage.knowledge_repo import GLOBAL, EntryInput

log = logging.getLogger(__name__)


class KnowledgePages(Room):
    """Listing, adding, editing, removing and exporting FAQ entries; the gaps;
    and what the bot would do with a question."""

    async def knowledge_page(self, request: web.Request) -> web.StreamResponse:
        q = request.query.get("q", "").strip()
        page = max(0, _int(request.query.get("page", "0")))
        entries = await self.repo.find_entries(
            text=q, tenant=_tenant(request), limit=50, offset=page * 50
        )
        return self._render(
            request,
            "knowledge.html",
            nav="knowledge",
            entries=entries,
            q=q,
            page=page,
            draft_question=request.query.get("new", ""),
            available=self.knowledge is not None,
            **await self._page_values(request),
        )

    async def entry_page(self, request: web.Request) -> web.StreamResponse:
        entry = await self.repo.entry(int(request.match_info["id"]))
        if entry is None:
            return await self._not_found(
                request, say("console.knowledge.missing", self.language(request))
            )
        if not self.reaches(request, entry.tenant):
            return await self._forbidden(request, self._what(request, entry.ref))
        return self._render(
            request,
            "entry.html",
            nav="knowledge",
            entry=entry,
            **await self._page_values(request),
        )

    def _entry_input(
        self, form: Mapping[str, Any], external_id: str | None, language: str
    ) -> EntryInput | str:
        question = " ".join(str(form.get("question", "")).split())
        answer = str(form.get("answer", "")).strip().replace("\r\n", "\n")
        if not question or not answer:
            return say("console.knowledge.incomplete", language)
        if len(question) > MAX_QUESTION_CHARS or len(answer) > MAX_ANSWER_CHARS:
            return say(
                "console.knowledge.too_long",
                language,
                question=MAX_QUESTION_CHARS,
                answer=MAX_ANSWER_CHARS,
            )
        alternatives = tuple(
            " ".join(line.split())
            for line in str(form.get("alternatives", "")).splitlines()
            if line.strip()
        )[:20]
        tags = tuple(t.strip() for t in str(form.get("tags", "")).split(",") if t.strip())
        return EntryInput(
            question=question,
            answer=answer,
            alternatives=alternatives,
            tags=tags,
            source=str(form.get("source", "")).strip(),
            external_id=external_id or None,
            updated_at=datetime.now(UTC),
        )

    async def add_entry(self, request: web.Request) -> web.StreamResponse:
        kb = self.knowledge
        form = request["form"]
        language = self.language(request)
        if kb is None:
            return web.json_response(
                {"error": say("console.knowledge.unavailable", language)}, status=503
            )
        entry = self._entry_input(form, str(form.get("external_id", "")).strip(), language)
        if isinstance(entry, str):
            self._say(request, entry)
            return _redirect("/console/knowledge")
        tenant = str(form.get("entry_tenant", "")).strip()
        if not self.reaches(request, tenant):
            return await self._forbidden(request, say("console.knowledge.entry_tenant", language))
        result = await kb.add(entry, tenant=tenant)
        log.info("console: FAQ entry %s (%s)", "added" if result.created else "updated", entry.key)
        said = (
            "console.knowledge.added"
            if result.created
            else "console.knowledge.updated"
            if result.updated
            else "console.knowledge.unchanged"
        )
        self._say(request, say(said, language, question=entry.question))
        return _redirect("/console/knowledge?" + urlencode({"q": entry.question}))

    async def edit_entry(self, request: web.Request) -> web.StreamResponse:
        kb = self.knowledge
        old = await self.repo.entry(int(request.match_info["id"]))
        language = self.language(request)
        if kb is None or old is None:
            raise web.HTTPNotFound(text=say("console.knowledge.missing", language))
        if not self.reaches(request, old.tenant):
            return await self._forbidden(request, self._what(request, old.ref))
        entry = self._entry_input(request["form"], old.external_id, language)
        if isinstance(entry, str):
            self._say(request, entry)
            return _redirect(f"/console/knowledge/entries/{old.id}")
        # The re-import key follows the question when there is no external id:
        # a reworded question is a new row, and the old one must go.
        await kb.add(entry, tenant=old.tenant)
        if entry.key != old.key:
            await kb.remove(str(old.id), tenant=old.tenant)
        log.info("console: FAQ entry %s edited", old.ref)
        self._say(request, say("console.knowledge.saved", language, question=entry.question))
        return _redirect("/console/knowledge?" + urlencode({"q": entry.question}))

    async def remove_entry(self, request: web.Request) -> web.StreamResponse:
        kb = self.knowledge
        old = await self.repo.entry(int(request.match_info["id"]))
        language = self.language(request)
        if kb is None or old is None:
            raise web.HTTPNotFound(text=say("console.knowledge.missing", language))
        if not self.reaches(request, old.tenant):
            return await self._forbidden(request, self._what(request, old.ref))
        await kb.remove(str(old.id), tenant=old.tenant)
        log.info("console: FAQ entry %s removed", old.ref)
        self._say(request, say("console.knowledge.removed", language, question=old.question))
        return _redirect("/console/knowledge")

    def _what(self, request: web.Request, ref: str) -> str:
        return say("console.knowledge.what", self.language(request), ref=ref)

    async def export_entries(self, request: web.Request) -> web.StreamResponse:
        kb = self.knowledge
        fmt = request.match_info["fmt"]
        if kb is None or fmt not in EXPORT_FORMATS:
            raise web.HTTPNotFound(text="nothing to export")
        entries = await kb.repository.entries(tenant=_tenant(request))
        kind = "text/csv" if fmt == "csv" else "application/jsonl"
        return web.Response(
            text=export_entries(entries, fmt),
            content_type=kind,
            headers={"Content-Disposition": f'attachment; filename="faq.{fmt}"'},
        )

    async def gaps(self, request: web.Request) -> web.StreamResponse:
        days = min(max(_int(request.query.get("days", "30")) or 30, 1), MAX_PERIOD_DAYS)
        since = datetime.now(UTC).date() - timedelta(days=days - 1)
        tenant = _tenant(request)
        asked = await self.repo.gap_questions(since=since, tenant=tenant)
        # Where agents set the suggested replies aside: the knowledge is off there.
        discarded = await self.desk.tickets.suggestions.discarded_topics(
            None if tenant is None else [tenant],
            since=datetime(since.year, since.month, since.day, tzinfo=UTC),
        )
        return self._render(
            request,
            "gaps.html",
            nav="knowledge",
            discarded=discarded,
            groups=group_gaps(asked)[:200],
            asked=len(asked),
            rated_bad=sum(1 for q in asked if q.why == "rated bad"),
            days=days,
            **await self._page_values(request),
        )

    async def try_question(self, request: web.Request) -> web.StreamResponse:
        kb = self.knowledge
        question = request.query.get("q", "").strip()[:MAX_QUESTION_CHARS]
        asking = request.query.get("as", "").strip()
        if not self.reaches(request, asking or GLOBAL):
            if asking:
                return await self._forbidden(request, f"Tenant {asking}")
            asking = _tenant(request) or ""
        values: dict[str, Any] = {"question": question, "asking": asking, "tried": False}
        if kb is not None and question:
            # The same planning path a customer's message takes, with the
            # five best passages shown.
            considered = await kb.consider(
                question, tenant=asking or GLOBAL, conversation_key="console:try", shown=5
            )
            plan = considered.plan
            values.update(
                tried=True,
                mode=considered.mode,
                passages=considered.passages,
                decision=considered.decision,
                plan=plan,
                plan_name=type(plan).__name__,
                plan_text=(
                    plan.text
                    if isinstance(plan, Verbatim | Escalate)
                    else plan.sources
                    if isinstance(plan, Grounded)
                    else ""
                ),
            )
            values["policy"] = kb.policy
        return self._render(
            request,
            "try.html",
            nav="knowledge",
            available=kb is not None,
            **values,
            **await self._page_values(request),
        )
