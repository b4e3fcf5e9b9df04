"""The console's tickets: the queue, one ticket's story, and the agent's actions on it."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

from aiohttp import web

from adapters.webconsole.pages import Room, _redirect, _tenant
from bot.handoff.actions import CONSOLE_ACTIONS, Actor
from bot.handoff.suggested import CONSOLE_SUGGESTION_ACTIONS
from bot.language import SUPPORTED_LANGUAGES
from bot.messages import say

log = logging.getLogger(__name__)

# Ids a page makes up for an action (ticket replies relay once per id).
_ACTION = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class TicketPages(Room):
    """The ticket queue, one ticket, and claim, reply, note, release and resolve."""

    async def tickets(self, request: web.Request) -> web.StreamResponse:
        tenant = _tenant(request)
        open_ids = await self.repo.ticket_ids(states=("waiting", "human"), tenant=tenant)
        closed_ids = await self.repo.ticket_ids(states=("closed",), tenant=tenant, limit=20)
        queue = [t for t in [await self.desk.tickets.get(i) for i in open_ids] if t is not None]
        closed = [t for t in [await self.desk.tickets.get(i) for i in closed_ids] if t]
        return self._render(
            request,
            "tickets.html",
            nav="tickets",
            queue=queue,
            closed=closed,
            now=datetime.now(UTC),
            connected=self.desk.connected,
            triggers=_triggers(self.language(request)),
            **await self._page_values(request),
        )

    async def ticket(self, request: web.Request) -> web.StreamResponse:
        ticket = await self.desk.tickets.get(int(request.match_info["id"]))
        if ticket is None:
            return await self._not_found(
                request, say("console.tickets.missing", self.language(request))
            )
        if not self.reaches(request, ticket.customer_address.tenant):
            return await self._forbidden(request, self._what(request, ticket.id))
        return self._render(
            request,
            "ticket.html",
            nav="tickets",
            ticket=ticket,
            events=await self.desk.tickets.events(ticket.id),
            suggestions=await self.desk.tickets.suggestions.of_ticket(ticket.id),
            triggers=_triggers(self.language(request)),
            languages=SUPPORTED_LANGUAGES,
            agent_name=await self._name(request),
            **await self._page_values(request),
        )

    async def ticket_action(self, request: web.Request) -> web.StreamResponse:
        form = request["form"]
        ticket_id = int(request.match_info["id"])
        action = request.match_info["action"]
        action_id = str(form.get("action", ""))
        back = f"/console/tickets/{ticket_id}"
        if not _ACTION.match(action_id):
            return _no_action_id(self.language(request))
        text = str(form.get("text", ""))
        desk = self.desk
        # The same action as the chat command: same audit entry, same notices.
        ticket = await desk.tickets.get(ticket_id)
        agent = self.viewer(request).actor
        language = self.language(request)
        if ticket is None:
            said = say("handoff.no_ticket", language, id=ticket_id)
        elif not self.reaches(request, ticket.customer_address.tenant):
            return await self._forbidden(request, self._what(request, ticket_id))
        else:
            actor = Actor.at_console(agent, await self._name(request), action_id, language)
            said = await CONSOLE_ACTIONS[action](desk, ticket, actor, text) or ""
        log.info("console: %s on ticket #%d by %s", action, ticket_id, agent)
        self._say(request, said)
        return _redirect(back)

    async def suggestion_action(self, request: web.Request) -> web.StreamResponse:
        """Send, edit-and-send or discard a suggested reply: the same functions as
        the buttons in the ticket's thread, so the same audit entries."""
        form = request["form"]
        ticket_id = int(request.match_info["id"])
        suggestion = int(request.match_info["sid"])
        action = request.match_info["action"]
        action_id = str(form.get("action", ""))
        if not _ACTION.match(action_id):
            return _no_action_id(self.language(request))
        ticket = await self.desk.tickets.get(ticket_id)
        agent = self.viewer(request).actor
        language = self.language(request)
        if ticket is None:
            said = say("handoff.no_ticket", language, id=ticket_id)
        elif not self.reaches(request, ticket.customer_address.tenant):
            return await self._forbidden(request, self._what(request, ticket_id))
        else:
            actor = Actor.at_console(agent, await self._name(request), action_id, language)
            args = f"{suggestion} {form.get('text', '')}".strip()
            said = await CONSOLE_SUGGESTION_ACTIONS[action](self.desk, ticket, actor, args) or ""
        log.info(
            "console: suggestion %s %d on ticket #%d by %s", action, suggestion, ticket_id, agent
        )
        self._say(request, said)
        return _redirect(f"/console/tickets/{ticket_id}")

    async def _name(self, request: web.Request) -> str:
        """What the customer and the team see of the person signed in: the
        name they last wrote under, their id without one."""
        person = self.viewer(request).person
        return await self.repo.display_name(person) if person else "Console"

    def _what(self, request: web.Request, ticket_id: int) -> str:
        return say("console.tickets.what", self.language(request), id=ticket_id)


def _triggers(language: str) -> dict[str, str]:
    """Why each kind of ticket was opened, in ``language``."""
    return {
        trigger: say(f"handoff.why.{trigger}", language)
        for trigger in ("request", "escalation", "model_failure", "takeover")
    }


def _no_action_id(language: str) -> web.Response:
    return web.json_response({"error": say("console.no_action_id", language)}, status=400)
