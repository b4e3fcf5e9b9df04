"""The console's conversations: search, transcripts, their export, and erasing a person."""

from __future__ import annotations

import logging
import re

from aiohttp import web

from adapters.webconsole.pages import Room, _date, _redirect, _safe_next, _tenant
from adapters.webconsole.reports import annotate, transcript_json, transcript_markdown
from bot.messages import say

log = logging.getLogger(__name__)
_CONVERSATION_PAGE = re.compile(r"^/console/conversations/(\d+)$")


class ConversationPages(Room):
    """Finding conversations, reading and exporting one, and deleting a person's data."""

    async def conversations(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        since, until = _date(q.get("since", "")), _date(q.get("until", ""))
        found = await self.repo.find_conversations(
            text=q.get("q", "").strip(),
            platform=q.get("platform", "").strip(),
            user=q.get("user", "").strip(),
            since=since,
            until=until,
            tenant=_tenant(request),
            limit=100,
        )
        return self._render(
            request,
            "conversations.html",
            nav="conversations",
            found=found,
            q=q.get("q", ""),
            platform=q.get("platform", ""),
            user=q.get("user", ""),
            since=q.get("since", ""),
            until=q.get("until", ""),
            platforms=("telegram", "slack", "web", "cli"),
            **await self._page_values(request),
        )

    async def transcript(self, request: web.Request) -> web.StreamResponse:
        found = await self.repo.transcript(int(request.match_info["id"]))
        if found is None:
            return await self._not_found(
                request, say("console.conversations.missing", self.language(request))
            )
        if not self.reaches(request, found.address.tenant):
            return await self._forbidden(request, self._what(request, found.id))
        turns = annotate(found, self.language(request))
        users = sorted({t.message.user_id for t in turns if t.message.user_id})
        return self._render(
            request,
            "transcript.html",
            nav="conversations",
            conversation=found,
            turns=turns,
            users=users,
            **await self._page_values(request),
        )

    async def export_transcript(self, request: web.Request) -> web.StreamResponse:
        found = await self.repo.transcript(int(request.match_info["id"]))
        if found is None:
            raise web.HTTPNotFound(
                text=say("console.conversations.missing", self.language(request))
            )
        if not self.reaches(request, found.address.tenant):
            return await self._forbidden(request, self._what(request, found.id))
        turns = annotate(found)
        fmt = request.match_info["fmt"]
        name = f"conversation-{found.id}.{fmt}"
        if fmt == "json":
            body, kind = transcript_json(found, turns), "application/json"
        else:
            body, kind = transcript_markdown(found, turns), "text/markdown"
        return web.Response(
            text=body,
            content_type=kind,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def forget_user(self, request: web.Request) -> web.StreamResponse:
        form = request["form"]
        user = str(form.get("user", "")).strip()
        back = _safe_next(str(form.get("back", ""))) or "/console/conversations"
        language = self.language(request)
        if not user or form.get("confirm") != "yes":
            self._say(request, say("console.conversations.confirm_first", language))
            return _redirect(back)
        if request.get("reached") is not None:
            # Erasing reaches every tenant the person wrote in: all must be the admin's.
            wrote_in = await self.repo.tenants_of_user(user)
            if not wrote_in or not all(self.reaches(request, t) for t in wrote_in):
                return await self._forbidden(
                    request, say("console.conversations.their_data", language, user=user)
                )
        tenant = await self._tenant_of(back)
        result = await self.services.forget_user(user)
        # The same entry as the chat's /forget: who was erased and how much.
        await self.team.audit(
            tenant,
            self.viewer(request).actor,
            "forget",
            user,
            {
                "messages": result.messages,
                "drafts": result.drafts,
                "events": result.events,
                "faq_answers": result.faq_answers,
                "escalations": result.escalations,
                "via": "console",
            },
        )
        # Kept in the log: who was erased and how much, never what they said.
        log.warning(
            "console: deleted the data of %s on an operator's request: %d messages, "
            "%d events emptied, %d logged answers, %d escalations",
            user,
            result.messages,
            result.events,
            result.faq_answers,
            result.escalations,
        )
        self._say(
            request,
            say(
                "console.conversations.forgotten",
                language,
                user=user,
                messages=result.messages,
                answers=result.faq_answers,
                escalations=result.escalations,
            ),
        )
        return _redirect("/console/conversations")

    def _what(self, request: web.Request, conversation: int) -> str:
        return say("console.conversations.what", self.language(request), id=conversation)

    async def _tenant_of(self, back: str) -> str:
        """The tenant of the conversation a form was sent from ("" for none)."""
        found = _CONVERSATION_PAGE.match(back)
        if found is None:
            return ""
        transcript = await self.repo.transcript(int(found[1]))
        return transcript.address.tenant if transcript is not None else ""
