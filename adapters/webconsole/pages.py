"""What every room of the operator console shares: the services seam, page
rendering in the reader's language, the one-time message after a write, and
the request helpers (tenant filter, dates, redirects) the rooms have in common."""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from adapters.clients import Client, client_of
from adapters.webconsole.language import LANGUAGE_COOKIE, chosen_language, console_language
from adapters.webconsole.people import Viewer
from adapters.webconsole.reports import PATH_NAMES
from bot.handoff.desk import HelpDesk
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.language import SUPPORTED_LANGUAGES
from bot.messages import keys, say
from bot.services import ConsoleServices
from bot.settings import Settings
from bot.team.access import Access
from bot.team.service import Team
from storage.console_repo import ConsoleSession
from storage.knowledge_repo import GLOBAL

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

COOKIE = "deskmate_console"
SESSION_LIFETIME = timedelta(hours=12)
MAX_PERIOD_DAYS = 366
_SHARED = "~"  # the tenant filter's name for entries every tenant sees
_KEYS = keys()
# The knowledge policy's reasons (bot/knowledge/policy.py decide, and a
# customer's own choice) by their catalog names: the console says them in its
# reader's language; one not listed here shows as the policy wrote it.
DECISION_REASONS = {
    "the knowledge base is empty": "empty",
    "no entry is close enough": "too_far",
    "confident match": "confident",
    "close runner-up": "close_runner_up",
    "partial match": "partial",
    "chosen by the customer": "chosen",
}
# The templates whose every text is in the catalog, said in the reader's language.
TRANSLATED = frozenset(
    {
        "overview.html",
        "tickets.html",
        "ticket.html",
        "knowledge.html",
        "entry.html",
        "docs.html",
        "login.html",
        "missing.html",
        "conversations.html",
        "transcript.html",
        "gaps.html",
        "try.html",
        "learned.html",
        "sites.html",
    }
)


class ConsoleContext:
    """The state one console's rooms share: settings, services, templates and
    the pending one-time messages."""

    def __init__(self, *, settings: Settings, services: ConsoleServices) -> None:
        self.settings = settings
        self.services = services
        self.env = Environment(
            loader=PackageLoader("adapters.webconsole", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _when
        self.env.filters["ms"] = _ms
        self.env.filters["share"] = _share
        self.env.globals["PATH_NAMES"] = PATH_NAMES
        self.env.globals["DECISION_REASONS"] = DECISION_REASONS
        # One message to show on the next page of a session (after a write).
        self.flash: OrderedDict[str, str] = OrderedDict()


class Room:
    """One concern of the console: the handlers of its pages and actions."""

    def __init__(self, context: ConsoleContext) -> None:
        self.context = context
        self.settings = context.settings
        self.services = context.services
        self.repo = context.services.repository
        self.env = context.env
        self._flash = context.flash

    def client(self, request: web.Request) -> Client:
        """Who sent ``request``, as the trusted proxies in front tell."""
        return client_of(request, self.settings.proxy_networks)

    @property
    def knowledge(self) -> KnowledgeBase | None:
        return self.services.knowledge

    @property
    def team(self) -> Team:
        return self.services.team

    @property
    def desk(self) -> HelpDesk:
        return self.services.desk

    def _render(
        self, request: web.Request, template: str, *, status: int = 200, **values: Any
    ) -> web.Response:
        session: ConsoleSession | None = request.get("session")
        viewer: Viewer | None = request.get("viewer")
        nonce = secrets.token_urlsafe(16)
        tenant_arg = request.get("tenant_arg", request.query.get("tenant", ""))

        def link(path: str, **params: object) -> str:
            query = {k: v for k, v in params.items() if v not in (None, "")}
            if tenant_arg and "tenant" not in params:
                query["tenant"] = tenant_arg
            return path + ("?" + urlencode(query) if query else "")

        flash = ""
        token = request.cookies.get(COOKIE, "")
        if token:
            flash = self._flash.pop(token, "")
        # A page not yet translated is English throughout, its frame too: a
        # page in two languages reads worse than one in English.
        language = console_language(request) if template in TRANSLATED else "en"

        def t(key: str, /, **values: object) -> str:
            return say(key, language, **values)

        def named(area: str, value: object) -> str:
            """A stored code's name (a ticket's state, an event's kind), itself
            where the catalog has none."""
            key = f"{area}.{value}"
            return say(key, language) if key in _KEYS else str(value)

        html = self.env.get_template(template).render(
            t=t,
            named=named,
            language=language,
            console_languages=SUPPORTED_LANGUAGES,
            csrf=session.csrf if session is not None else "",
            nonce=nonce,
            path=request.path,
            tenant_arg=tenant_arg,
            request_args={k: v for k, v in request.query.items() if k != "tenant"},
            link=link,
            flash=flash,
            action_id=lambda: secrets.token_urlsafe(12),
            viewer=viewer,
            scoped=viewer is not None and not viewer.owner,
            # An agent's console is the tickets: the other pages would refuse them.
            admin_pages=viewer is None or viewer.tenants(Access.ADMIN) != [],
            **values,
        )
        response = web.Response(text=html, status=status, content_type="text/html")
        chosen = chosen_language(request)
        if chosen:
            # The reader's choice outlives the page: kept for a year, for every console page.
            response.set_cookie(
                LANGUAGE_COOKIE,
                chosen,
                max_age=365 * 24 * 3600,
                path="/console",
                samesite="Lax",
                httponly=True,
                secure=self.client(request).secure,
            )
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
            f"script-src 'nonce-{nonce}'; connect-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        return response

    def language(self, request: web.Request) -> str:
        """The language the console speaks to the reader of ``request``."""
        return console_language(request)

    def _say(self, request: web.Request, text: str) -> None:
        token = request.cookies.get(COOKIE, "")
        if token:
            self._flash[token] = text
            while len(self._flash) > 1000:
                self._flash.popitem(last=False)

    async def _page_values(self, request: web.Request) -> dict[str, Any]:
        reached: list[str] | None = request.get("reached")
        tenants = reached if reached is not None else await self.repo.tenants()
        return {"tenants": tenants, "tenant": _tenant(request)}

    def viewer(self, request: web.Request) -> Viewer:
        """The person signed in (set by the guard in front of every handler)."""
        viewer: Viewer = request["viewer"]
        return viewer

    def reaches(self, request: web.Request, tenant: str) -> bool:
        """Whether the person signed in may see and act on ``tenant`` on this page."""
        reached: list[str] | None = request.get("reached")
        return reached is None or tenant in reached

    async def _forbidden(self, request: web.Request, what: str) -> web.StreamResponse:
        """The refusal of something of a tenant the person does not reach."""
        language = self.language(request)
        text = say("console.not_yours", language, what=what)
        if request.method != "GET":
            return web.json_response({"error": text}, status=403)
        return self._render(
            request,
            "missing.html",
            status=403,
            text=text,
            heading=say("console.not_yours_title", language),
            **await self._page_values(request),
        )

    async def _not_found(self, request: web.Request, text: str) -> web.Response:
        return self._render(
            request, "missing.html", status=404, text=text, **await self._page_values(request)
        )


# -- request and response helpers ---------------------------------------------------------


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _safe_next(target: str) -> str:
    # Only back into the console: never an open redirect to another site.
    if target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return ""


def _tenant(request: web.Request) -> str | None:
    """The tenant a page shows (None: every tenant): the guard's choice for the
    person signed in, which is the query's filter for owners."""
    if "tenant" in request:
        tenant: str | None = request["tenant"]
        return tenant
    return _query_tenant(request)


def _query_tenant(request: web.Request) -> str | None:
    raw = request.query.get("tenant", "")
    if not raw:
        return None
    return GLOBAL if raw == _SHARED else raw


def _date(raw: str) -> date | None:
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def _int(raw: str) -> int:
    return int(raw) if raw.isdigit() else 0


def _when(value: datetime | None) -> Markup | str:
    if value is None:
        return "—"
    utc = value.astimezone(UTC)
    return Markup('<time datetime="{}">{}</time>').format(
        utc.isoformat(timespec="seconds"), utc.strftime("%Y-%m-%d %H:%M")
    )


def _share(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f} %"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"
