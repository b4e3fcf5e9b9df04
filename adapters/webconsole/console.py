"""The operator console's routes on the bot's HTTP server.

Each concern is a room of its own module: signing in and the guards
(``auth``), the overview (``overview``), conversations (``conversations``),
tickets (``tickets``), the FAQ (``knowledge``), learned answers (``learned``),
file imports (``imports``), documents (``documents``) and the website widget's
sites (``sites``). ``WebConsole`` builds them on one ``ConsoleContext`` and puts
every route behind the guard it needs. The console sees the bot only through
``ConsoleServices`` (``bot/services.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from adapters.webconsole.auth import SignIn
from adapters.webconsole.conversations import ConversationPages
from adapters.webconsole.documents import DocumentPages
from adapters.webconsole.imports import ImportJobs
from adapters.webconsole.knowledge import KnowledgePages
from adapters.webconsole.learned import LearnedPages
from adapters.webconsole.live import ModelSampler
from adapters.webconsole.overview import OverviewPages
from adapters.webconsole.pages import ConsoleContext, Handler
from adapters.webconsole.sites import SitePages
from adapters.webconsole.tickets import TicketPages
from bot.services import ConsoleServices
from bot.settings import Settings
from bot.team.access import Access

if TYPE_CHECKING:
    from adapters.web import HttpServer


def mount_console(http: HttpServer, *, settings: Settings, services: ConsoleServices) -> WebConsole:
    """Add the console's routes to ``http``; its sampler runs while the server does."""
    console = WebConsole(
        settings=settings,
        services=services,
        sampler=ModelSampler(metrics=services.metrics, stats=services.model_stats),
    )
    console.mount(http)
    return console


AGENT = Access.AGENT


class WebConsole:
    """The console's rooms, mounted together under ``/console``."""

    def __init__(
        self, *, settings: Settings, services: ConsoleServices, sampler: ModelSampler
    ) -> None:
        self.settings = settings
        self.services = services
        self.sampler = sampler
        context = ConsoleContext(settings=settings, services=services)
        self.sign_in = SignIn(context)
        self.overview = OverviewPages(context, sampler=sampler)
        self.conversations = ConversationPages(context)
        self.tickets = TicketPages(context)
        self.knowledge = KnowledgePages(context)
        self.learned = LearnedPages(context)
        self.imports = ImportJobs(context)
        self.sites = SitePages(context)
        self.documents = DocumentPages(context)

    def routes(self) -> list[tuple[str, str, Handler]]:
        """Every route of the console, each behind its guard: ``page`` needs a
        session, ``write`` a session and its CSRF token; sign-in needs neither.
        Tickets are for agents and admins of their tenants, every other page
        for admins (owners reach everything)."""
        page, write = self.sign_in.page, self.sign_in.write
        overview, conversations, tickets = self.overview, self.conversations, self.tickets
        knowledge, learned, imports = self.knowledge, self.learned, self.imports
        documents = self.documents
        return [
            ("GET", "/console", page(overview.overview)),
            ("GET", "/console/", page(overview.overview)),
            ("GET", "/console/login", self.sign_in.login_page),
            ("POST", "/console/login", self.sign_in.login),
            ("POST", "/console/logout", write(self.sign_in.logout, None)),
            ("GET", "/console/api/overview", page(overview.overview_json)),
            ("GET", "/console/conversations", page(conversations.conversations)),
            ("GET", r"/console/conversations/{id:\d+}", page(conversations.transcript)),
            (
                "GET",
                r"/console/conversations/{id:\d+}/export.{fmt:json|md}",
                page(conversations.export_transcript),
            ),
            ("POST", "/console/users/forget", write(conversations.forget_user)),
            ("GET", "/console/tickets", page(tickets.tickets, AGENT)),
            ("GET", r"/console/tickets/{id:\d+}", page(tickets.ticket, AGENT)),
            (
                "POST",
                r"/console/tickets/{id:\d+}/{action:claim|reply|note|release|resolve|learn}",
                write(tickets.ticket_action, AGENT),
            ),
            (
                "POST",
                r"/console/tickets/{id:\d+}/suggestions/{sid:\d+}/{action:send|edit|discard}",
                write(tickets.suggestion_action, AGENT),
            ),
            ("GET", "/console/knowledge", page(knowledge.knowledge_page)),
            ("POST", "/console/knowledge/entries", write(knowledge.add_entry)),
            ("GET", r"/console/knowledge/entries/{id:\d+}", page(knowledge.entry_page)),
            ("POST", r"/console/knowledge/entries/{id:\d+}", write(knowledge.edit_entry)),
            (
                "POST",
                r"/console/knowledge/entries/{id:\d+}/remove",
                write(knowledge.remove_entry),
            ),
            ("GET", "/console/knowledge/export.{fmt:csv|jsonl}", page(knowledge.export_entries)),
            ("GET", "/console/knowledge/gaps", page(knowledge.gaps)),
            ("GET", "/console/knowledge/learned", page(learned.learned)),
            (
                "POST",
                r"/console/knowledge/learned/{id:\d+}/{decision:approve|reject}",
                write(learned.decide_learned),
            ),
            ("GET", "/console/knowledge/try", page(knowledge.try_question)),
            ("POST", "/console/api/knowledge/import", write(imports.start_import)),
            ("GET", "/console/api/knowledge/import/{job}", page(imports.import_status)),
            ("GET", "/console/sites", page(self.sites.sites_page)),
            ("POST", "/console/sites", write(self.sites.add_site)),
            ("POST", r"/console/sites/{key:[A-Za-z0-9_-]+}", write(self.sites.edit_site)),
            (
                "POST",
                r"/console/sites/{key:[A-Za-z0-9_-]+}/remove",
                write(self.sites.remove_site),
            ),
            ("GET", "/console/documents", page(documents.documents_page)),
            ("POST", "/console/api/documents/upload", write(documents.upload)),
            ("POST", "/console/api/documents/url", write(documents.add_url)),
            ("POST", "/console/api/documents/sync", write(documents.sync)),
            ("GET", "/console/api/documents/jobs/{job}", page(documents.job_status)),
            ("POST", r"/console/documents/{id:\d+}/remove", write(documents.remove)),
        ]

    def mount(self, http: HttpServer) -> None:
        for method, path, handler in self.routes():
            http.add_route(method, path, handler)
        http.app.on_startup.append(self._on_startup)
        http.app.on_cleanup.append(self._on_cleanup)

    async def _on_startup(self, _app: web.Application) -> None:
        self.sampler.start()

    async def _on_cleanup(self, _app: web.Application) -> None:
        await self.sampler.stop()
        self.imports.cancel()
        self.documents.cancel()
