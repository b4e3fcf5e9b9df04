"""The operator console's routes on the bot's HTTP server.

Signing in: ``DESKMATE_CONSOLE_TOKEN`` typed into the sign-in form, or a
one-time link from ``deskmate console link`` (stored hashed, spent on use,
expiring). Either starts a session: a random cookie (HttpOnly, SameSite=Strict,
path /console) whose hash is stored with the session's CSRF token. Every page
and API needs the session; every write needs the CSRF token as well, in the
form (``csrf``) or, for fetches, in the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import secrets
import tempfile
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from aiohttp import BodyPartReader, web
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from adapters.webconsole import charts
from adapters.webconsole.live import ModelSampler
from adapters.webconsole.reports import (
    PATH_NAMES,
    annotate,
    group_gaps,
    transcript_json,
    transcript_markdown,
)
from bot.errors import DeskmateError, StorageError
from bot.handoff.desk import TRIGGERS, HelpDesk
from bot.knowledge.export import EXPORT_FORMATS, export_entries
from bot.knowledge.importer import (
    MAX_ANSWER_CHARS,
    MAX_QUESTION_CHARS,
    KnowledgeImportError,
    detect_format,
)
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.manager import ConversationManager
from bot.plans import Escalate, Grounded, Verbatim
from bot.settings import Settings
from bot.team import learning
from bot.team.service import Team
from llm.base import Backend
from storage.console_repo import ConsoleRepository, ConsoleSession, Overview
from storage.knowledge_repo import GLOBAL, EntryInput, FaqEntry

if TYPE_CHECKING:
    from adapters.web import HttpServer

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

COOKIE = "deskmate_console"
LOGIN_COOKIE = "deskmate_console_login"
SESSION_LIFETIME = timedelta(hours=12)
MAX_IMPORT_BYTES = 20 * 1024 * 1024
MAX_PERIOD_DAYS = 366
FAILED_SIGN_INS = 10  # a minute, per client address
# Chart colours of the rating series: greens for 👍, reds for 👎.
RATING_COLORS = ("#26a269", "#c01c28", "#8ff0a4", "#f66151")
# Ids a page makes up for an action (ticket replies relay once per id).
_ACTION = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_SHARED = "~"  # the tenant filter's name for entries every tenant sees


def mount_console(
    http: HttpServer,
    *,
    settings: Settings,
    manager: ConversationManager,
    desk: HelpDesk,
    backend: Backend,
) -> WebConsole:
    """Add the console's routes to ``http``; its sampler runs while the server does."""
    stats = getattr(backend, "stats", None)
    console = WebConsole(
        settings=settings,
        manager=manager,
        desk=desk,
        backend_name=backend.name,
        repository=ConsoleRepository(manager.repository.db),
        sampler=ModelSampler(metrics=manager.metrics, stats=stats if callable(stats) else None),
    )
    console.mount(http)
    return console


@dataclass(slots=True)
class ImportJob:
    id: str
    name: str
    tenant: str
    done: int = 0
    total: int = 0
    finished: bool = False
    report: list[str] = field(default_factory=list)
    error: str = ""
    task: asyncio.Task[None] | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "job": self.id,
            "name": self.name,
            "done": self.done,
            "total": self.total,
            "finished": self.finished,
            "report": self.report,
            "error": self.error,
        }


class WebConsole:
    def __init__(
        self,
        *,
        settings: Settings,
        manager: ConversationManager,
        desk: HelpDesk,
        backend_name: str,
        repository: ConsoleRepository,
        sampler: ModelSampler,
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.desk = desk
        self.backend_name = backend_name
        self.repo = repository
        self.sampler = sampler
        self.env = Environment(
            loader=PackageLoader("adapters.webconsole", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _when
        self.env.filters["ms"] = _ms
        self.env.globals["PATH_NAMES"] = PATH_NAMES
        # Failed sign-ins per client address, so a token cannot be guessed online.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        # One message to show on the next page of a session (after a write).
        self._flash: OrderedDict[str, str] = OrderedDict()
        self._imports: OrderedDict[str, ImportJob] = OrderedDict()

    @property
    def knowledge(self) -> KnowledgeBase | None:
        return self.manager.knowledge

    @property
    def team(self) -> Team:
        return self.manager.team

    def mount(self, http: HttpServer) -> None:
        page, write = self._page, self._write
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/console", page(self.overview)),
            ("GET", "/console/", page(self.overview)),
            ("GET", "/console/login", self.login_page),
            ("POST", "/console/login", self.login),
            ("POST", "/console/logout", write(self.logout)),
            ("GET", "/console/api/overview", page(self.overview_json)),
            ("GET", "/console/conversations", page(self.conversations)),
            ("GET", r"/console/conversations/{id:\d+}", page(self.transcript)),
            (
                "GET",
                r"/console/conversations/{id:\d+}/export.{fmt:json|md}",
                page(self.export_transcript),
            ),
            ("POST", "/console/users/forget", write(self.forget_user)),
            ("GET", "/console/tickets", page(self.tickets)),
            ("GET", r"/console/tickets/{id:\d+}", page(self.ticket)),
            (
                "POST",
                r"/console/tickets/{id:\d+}/{action:claim|reply|note|release|resolve}",
                write(self.ticket_action),
            ),
            ("GET", "/console/knowledge", page(self.knowledge_page)),
            ("POST", "/console/knowledge/entries", write(self.add_entry)),
            ("GET", r"/console/knowledge/entries/{id:\d+}", page(self.entry_page)),
            ("POST", r"/console/knowledge/entries/{id:\d+}", write(self.edit_entry)),
            ("POST", r"/console/knowledge/entries/{id:\d+}/remove", write(self.remove_entry)),
            ("GET", "/console/knowledge/export.{fmt:csv|jsonl}", page(self.export_entries)),
            ("GET", "/console/knowledge/gaps", page(self.gaps)),
            ("GET", "/console/knowledge/learned", page(self.learned)),
            (
                "POST",
                r"/console/knowledge/learned/{id:\d+}/{decision:approve|reject}",
                write(self.decide_learned),
            ),
            ("GET", "/console/knowledge/try", page(self.try_question)),
            ("POST", "/console/api/knowledge/import", write(self.start_import)),
            ("GET", "/console/api/knowledge/import/{job}", page(self.import_status)),
        ]
        for method, path, handler in routes:
            http.add_route(method, path, handler)
        http.app.on_startup.append(self._on_startup)
        http.app.on_cleanup.append(self._on_cleanup)

    async def _on_startup(self, _app: web.Application) -> None:
        self.sampler.start()

    async def _on_cleanup(self, _app: web.Application) -> None:
        await self.sampler.stop()
        for job in self._imports.values():
            if job.task is not None and not job.task.done():
                job.task.cancel()

    # -- sessions and CSRF -------------------------------------------------------------

    async def _session(self, request: web.Request) -> ConsoleSession | None:
        token = request.cookies.get(COOKIE, "")
        if not token:
            return None
        return await self.repo.session(token)

    def _page(self, handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            session = await self._session(request)
            if session is None:
                if request.path.startswith("/console/api/"):
                    return _secure(web.json_response({"error": "sign in first"}, status=401))
                target = quote(request.path_qs, safe="")
                return _secure(_redirect(f"/console/login?next={target}"))
            request["session"] = session
            return _secure(await handler(request))

        return wrapped

    def _write(self, handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            session = await self._session(request)
            if session is None:
                return _secure(web.json_response({"error": "sign in first"}, status=401))
            if not _same_origin(request):
                return _secure(web.json_response({"error": "cross-site request"}, status=403))
            given = request.headers.get("X-CSRF-Token", "")
            form: Mapping[str, Any] = {}
            if request.content_type != "multipart/form-data":
                form = await request.post()
                given = given or str(form.get("csrf", ""))
            if not given or not hmac.compare_digest(given.encode(), session.csrf.encode()):
                return _secure(web.json_response({"error": "missing CSRF token"}, status=403))
            request["session"] = session
            request["form"] = form
            return _secure(await handler(request))

        return wrapped

    def _render(
        self, request: web.Request, template: str, *, status: int = 200, **values: Any
    ) -> web.Response:
        session: ConsoleSession | None = request.get("session")
        nonce = secrets.token_urlsafe(16)
        tenant_arg = request.query.get("tenant", "")

        def link(path: str, **params: object) -> str:
            query = {k: v for k, v in params.items() if v not in (None, "")}
            if tenant_arg and "tenant" not in params:
                query["tenant"] = tenant_arg
            return path + ("?" + urlencode(query) if query else "")

        flash = ""
        token = request.cookies.get(COOKIE, "")
        if token:
            flash = self._flash.pop(token, "")
        html = self.env.get_template(template).render(
            csrf=session.csrf if session is not None else "",
            nonce=nonce,
            path=request.path,
            tenant_arg=tenant_arg,
            request_args={k: v for k, v in request.query.items() if k != "tenant"},
            link=link,
            flash=flash,
            action_id=lambda: secrets.token_urlsafe(12),
            **values,
        )
        response = web.Response(text=html, status=status, content_type="text/html")
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
            f"script-src 'nonce-{nonce}'; connect-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        return response

    def _refused(self, remote: str) -> bool:
        """Whether ``remote`` failed to sign in too often in the last minute."""
        failures = self._failures.get(remote)
        return (
            failures is not None
            and len(failures) >= FAILED_SIGN_INS
            and time.monotonic() - failures[0] < 60.0
        )

    def _say(self, request: web.Request, text: str) -> None:
        token = request.cookies.get(COOKIE, "")
        if token:
            self._flash[token] = text
            while len(self._flash) > 1000:
                self._flash.popitem(last=False)

    async def _page_values(self, request: web.Request) -> dict[str, Any]:
        return {"tenants": await self.repo.tenants(), "tenant": _tenant(request)}

    # -- signing in ----------------------------------------------------------------

    async def login_page(self, request: web.Request, *, error: str = "") -> web.StreamResponse:
        pre = secrets.token_urlsafe(24)
        response = self._render(
            request,
            "login.html",
            status=401 if error else 200,
            login_csrf=pre,
            error=error,
            link_token=request.query.get("link", ""),
            token_enabled=bool(self.settings.console_token),
            next=_safe_next(request.query.get("next", "")),
        )
        # Sign-in has no session yet: the form's token must match this cookie.
        response.set_cookie(
            LOGIN_COOKIE,
            pre,
            httponly=True,
            samesite="Strict",
            path="/console/login",
            secure=request.secure,
            max_age=3600,
        )
        return _secure(response)

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not _same_origin(request):
            return _secure(web.json_response({"error": "cross-site request"}, status=403))
        form = await request.post()
        pre = request.cookies.get(LOGIN_COOKIE, "")
        given = str(form.get("csrf", ""))
        if not pre or not hmac.compare_digest(pre.encode(), given.encode()):
            return _secure(web.json_response({"error": "missing CSRF token"}, status=403))
        remote = request.remote or "?"
        if self._refused(remote):
            return _secure(
                web.json_response({"error": "too many failed sign-ins; wait a minute"}, status=429)
            )
        token, link = str(form.get("token", "")), str(form.get("link", ""))
        via = ""
        if link and await self.repo.use_link(link):
            via = "link"
        elif (
            token
            and self.settings.console_token
            and hmac.compare_digest(token.encode(), self.settings.console_token.encode())
        ):
            via = "token"
        if not via:
            self._failures.setdefault(remote, deque(maxlen=FAILED_SIGN_INS)).append(
                time.monotonic()
            )
            while len(self._failures) > 10_000:
                self._failures.popitem(last=False)
            log.warning("console: refused a sign-in from %s", remote)
            error = (
                "That sign-in link is used up, expired or wrong. Print a new one with "
                "`deskmate console link`."
                if link
                else "Wrong token."
            )
            return await self.login_page(request, error=error)
        session, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        await self.repo.create_session(session, csrf=csrf, via=via, valid_for=SESSION_LIFETIME)
        log.info("console: signed in with a %s from %s", via, request.remote)
        response = _redirect(_safe_next(str(form.get("next", ""))) or "/console")
        response.set_cookie(
            COOKIE,
            session,
            httponly=True,
            samesite="Strict",
            path="/console",
            secure=request.secure,
            max_age=int(SESSION_LIFETIME.total_seconds()),
        )
        response.del_cookie(LOGIN_COOKIE, path="/console/login")
        return _secure(response)

    async def logout(self, request: web.Request) -> web.StreamResponse:
        await self.repo.end_session(request.cookies.get(COOKIE, ""))
        response = _redirect("/console/login")
        response.del_cookie(COOKIE, path="/console")
        return response

    # -- overview --------------------------------------------------------------------

    async def _overview_data(self, request: web.Request) -> dict[str, Any]:
        since, until = _period(request)
        tenant = _tenant(request)
        figures = await self.repo.overview(since, until, tenant=tenant)
        answered = {PATH_NAMES[k]: v for k, v in figures.answered.items()}
        return {"since": since, "until": until, "figures": figures, "answered": answered}

    async def overview(self, request: web.Request) -> web.StreamResponse:
        data = await self._overview_data(request)
        figures, answered = data["figures"], data["answered"]
        days = figures.days
        samples = list(self.sampler.samples)
        plots = {
            "conversations": charts.stacked_per_day(
                "Conversations per day by platform", days, figures.conversations
            ),
            "messages": charts.stacked_per_day(
                "Messages per day by platform", days, figures.messages
            ),
            "answered": charts.stacked_per_day(
                "How questions were answered, per day", days, answered
            ),
            "latency": charts.percentiles_per_day(
                "Answer latency per day, p50 and p95", days, figures.latency, "ms"
            ),
            "first_reply": charts.percentiles_per_day(
                "Time to first human reply per day, p50 and p95",
                days,
                figures.first_reply,
                "minutes",
            ),
            "ratings": charts.stacked_per_day(
                "Ratings per day, of answers and of resolved tickets",
                days,
                figures.ratings,
                colors=RATING_COLORS,
            ),
        }
        model = charts.model_live("Model queue depth and tokens per second", samples)
        if model is not None:
            plots["model"] = model
        return self._render(
            request,
            "overview.html",
            nav="overview",
            plots=plots,
            totals={name: sum(per_day.values()) for name, per_day in answered.items()},
            platform_totals={
                p: (sum(figures.conversations.get(p, {}).values()), sum(v.values()))
                for p, v in figures.messages.items()
            },
            rating_rows=_rating_rows(figures),
            latest=samples[-1] if samples else None,
            reports_queue=self.sampler.reports_queue,
            model_settings=self._model_settings(),
            **data,
            **await self._page_values(request),
        )

    async def overview_json(self, request: web.Request) -> web.StreamResponse:
        data = await self._overview_data(request)
        f = data["figures"]
        return web.json_response(
            {
                "since": data["since"].isoformat(),
                "until": data["until"].isoformat(),
                "days": f.days,
                "conversations": f.conversations,
                "messages": f.messages,
                "answered": f.answered,
                "latency_ms": {d: list(v) for d, v in f.latency.items()},
                "latency_ms_overall": list(f.latency_overall),
                "first_reply_minutes": {d: list(v) for d, v in f.first_reply.items()},
                "first_reply_minutes_overall": list(f.first_reply_overall),
                "tickets_opened": f.tickets_opened,
                "tickets_unanswered": f.tickets_unanswered,
                "ratings": f.ratings,
                "rated_good_share": f.good_share,
                "model": self._model_settings(),
            }
        )

    def _model_settings(self) -> dict[str, str]:
        s = self.settings
        rows = {"backend": self.backend_name}
        if s.llm_url:
            rows["server"] = s.llm_url
            rows["model"] = s.llm_model_name or "(server default)"
        else:
            rows.update(
                {
                    "model": s.model,
                    "quantization": s.quantization,
                    "dtype": s.dtype,
                    "device": s.device,
                }
            )
        rows.update(
            {
                "max batch": str(s.max_batch_size),
                "max queue": str(s.max_queue),
                "max new tokens": str(s.max_new_tokens),
                "temperature": str(s.temperature),
                "embedding model": str(s.embedding_model or "all-MiniLM-L6-v2 (bundled)"),
                "FAQ thresholds": (
                    f"verbatim ≥ {s.faq_verbatim_score}, grounded ≥ {s.faq_grounded_score}"
                ),
            }
        )
        return rows

    # -- conversations ---------------------------------------------------------------

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
            return await self._not_found(request, "There is no such conversation.")
        turns = annotate(found)
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
            raise web.HTTPNotFound(text="no such conversation")
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
        if not user or form.get("confirm") != "yes":
            self._say(request, "Tick the box to confirm, then delete.")
            return _redirect(back)
        result = await self.manager.forget_user(user)
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
            f"Deleted everything stored about {user}: {result.messages} messages, "
            f"{result.faq_answers} logged answers, {result.escalations} escalations.",
        )
        return _redirect("/console/conversations")

    # -- tickets -------------------------------------------------------------------------

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
            triggers=TRIGGERS,
            **await self._page_values(request),
        )

    async def ticket(self, request: web.Request) -> web.StreamResponse:
        ticket = await self.desk.tickets.get(int(request.match_info["id"]))
        if ticket is None:
            return await self._not_found(request, "There is no such ticket.")
        return self._render(
            request,
            "ticket.html",
            nav="tickets",
            ticket=ticket,
            events=await self.desk.tickets.events(ticket.id),
            triggers=TRIGGERS,
            agent_name=request.cookies.get("deskmate_console_agent", "") or "Console",
            **await self._page_values(request),
        )

    async def ticket_action(self, request: web.Request) -> web.StreamResponse:
        form = request["form"]
        ticket_id = int(request.match_info["id"])
        action = request.match_info["action"]
        action_id = str(form.get("action", ""))
        back = f"/console/tickets/{ticket_id}"
        if not _ACTION.match(action_id):
            return web.json_response({"error": "the form has no action id"}, status=400)
        agent_name = " ".join(str(form.get("agent_name", "")).split())[:60] or "Console"
        agent = f"console:{agent_name}"
        text = str(form.get("text", ""))
        desk = self.desk
        if action == "claim":
            said = await desk.console_claim(
                ticket_id, agent=agent, agent_name=agent_name, action=action_id
            )
        elif action == "reply":
            said = await desk.console_reply(
                ticket_id, agent=agent, agent_name=agent_name, text=text, action=action_id
            )
        elif action == "note":
            said = await desk.console_note(
                ticket_id, agent=agent, agent_name=agent_name, text=text, action=action_id
            )
        elif action == "release":
            said = await desk.console_release(ticket_id, agent=agent, agent_name=agent_name)
        else:
            said = await desk.console_resolve(
                ticket_id, agent=agent, agent_name=agent_name, action=action_id
            )
        log.info("console: %s on ticket #%d by %s", action, ticket_id, agent)
        self._say(request, said)
        response = _redirect(back)
        # Remembered so the next form is signed the same way.
        response.set_cookie(
            "deskmate_console_agent",
            agent_name,
            httponly=True,
            samesite="Strict",
            path="/console",
            secure=request.secure,
            max_age=int(SESSION_LIFETIME.total_seconds()),
        )
        return response

    # -- knowledge -------------------------------------------------------------------

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
            return await self._not_found(request, "There is no such entry.")
        return self._render(
            request,
            "entry.html",
            nav="knowledge",
            entry=entry,
            **await self._page_values(request),
        )

    def _entry_input(self, form: Mapping[str, Any], external_id: str | None) -> EntryInput | str:
        question = " ".join(str(form.get("question", "")).split())
        answer = str(form.get("answer", "")).strip().replace("\r\n", "\n")
        if not question or not answer:
            return "An entry needs a question and an answer."
        if len(question) > MAX_QUESTION_CHARS or len(answer) > MAX_ANSWER_CHARS:
            return (
                f"Questions are at most {MAX_QUESTION_CHARS} characters and answers "
                f"{MAX_ANSWER_CHARS}."
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
        if kb is None:
            return web.json_response({"error": "no knowledge base"}, status=503)
        entry = self._entry_input(form, str(form.get("external_id", "")).strip())
        if isinstance(entry, str):
            self._say(request, entry)
            return _redirect("/console/knowledge")
        tenant = str(form.get("entry_tenant", "")).strip()
        result = await kb.add(entry, tenant=tenant)
        log.info("console: FAQ entry %s (%s)", "added" if result.created else "updated", entry.key)
        what = "Added" if result.created else "Updated" if result.updated else "Unchanged:"
        self._say(request, f"{what} the entry “{entry.question}”.")
        return _redirect("/console/knowledge?" + urlencode({"q": entry.question}))

    async def edit_entry(self, request: web.Request) -> web.StreamResponse:
        kb = self.knowledge
        old = await self.repo.entry(int(request.match_info["id"]))
        if kb is None or old is None:
            raise web.HTTPNotFound(text="no such entry")
        entry = self._entry_input(request["form"], old.external_id)
        if isinstance(entry, str):
            self._say(request, entry)
            return _redirect(f"/console/knowledge/entries/{old.id}")
        # The re-import key follows the question when there is no external id:
        # a reworded question is a new row, and the old one must go.
        await kb.add(entry, tenant=old.tenant)
        if entry.key != old.key:
            await kb.remove(str(old.id), tenant=old.tenant)
        log.info("console: FAQ entry %s edited", old.ref)
        self._say(request, f"Saved the entry “{entry.question}”.")
        return _redirect("/console/knowledge?" + urlencode({"q": entry.question}))

    async def remove_entry(self, request: web.Request) -> web.StreamResponse:
        kb = self.knowledge
        old = await self.repo.entry(int(request.match_info["id"]))
        if kb is None or old is None:
            raise web.HTTPNotFound(text="no such entry")
        await kb.remove(str(old.id), tenant=old.tenant)
        log.info("console: FAQ entry %s removed", old.ref)
        self._say(request, f"Removed the entry “{old.question}”.")
        return _redirect("/console/knowledge")

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
        asked = await self.repo.gap_questions(since=since, tenant=_tenant(request))
        return self._render(
            request,
            "gaps.html",
            nav="knowledge",
            groups=group_gaps(asked)[:200],
            asked=len(asked),
            rated_bad=sum(1 for q in asked if q.why == "rated bad"),
            days=days,
            **await self._page_values(request),
        )

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
            agent_name=request.cookies.get("deskmate_console_agent", "") or "Console",
            **await self._page_values(request),
        )

    async def decide_learned(self, request: web.Request) -> web.StreamResponse:
        """Approve (with the answer as edited) or reject a learned answer, as
        ``/faq approve|reject`` do: searchable at once, audited."""
        kb = self.knowledge
        form = request["form"]
        proposal_id = int(request.match_info["id"])
        back = "/console/knowledge/learned"
        if kb is None:
            return web.json_response({"error": "no knowledge base"}, status=503)
        proposal = await self.team.repository.proposal(proposal_id)
        if proposal is None:
            raise web.HTTPNotFound(text="no such learned answer")
        if proposal.status != "pending":
            self._say(request, f"Learned answer #{proposal_id} was already {proposal.status}.")
            return _redirect(back)
        agent_name = " ".join(str(form.get("agent_name", "")).split())[:60] or "Console"
        actor = f"console:{agent_name}"
        if request.match_info["decision"] == "reject":
            if await self.team.repository.decide(proposal.id, approved=False, by=actor) is None:
                said = f"Learned answer #{proposal_id} was decided meanwhile."
            else:
                said = f"Rejected learned answer #{proposal_id}."
        else:
            answer = str(form.get("answer", "")).strip().replace("\r\n", "\n")
            if not answer or len(answer) > MAX_ANSWER_CHARS:
                self._say(request, f"An answer is 1 to {MAX_ANSWER_CHARS} characters.")
                return _redirect(back)
            # Unchanged, a new phrasing keeps its entry's answer (as /faq approve ID).
            edited = answer if answer != proposal.answer.strip() else None
            said = await learning.approve(self.team, kb, proposal, by=actor, answer=edited)
        log.info(
            "console: learned answer #%d %sd by %s",
            proposal_id,
            request.match_info["decision"],
            actor,
        )
        self._say(request, said)
        return _redirect(back)

    async def try_question(self, request: web.Request) -> web.StreamResponse:
        kb = self.knowledge
        question = request.query.get("q", "").strip()[:MAX_QUESTION_CHARS]
        asking = request.query.get("as", "").strip()
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

    async def start_import(self, request: web.Request) -> web.StreamResponse:
        kb = self.knowledge
        if kb is None:
            return web.json_response({"error": "no knowledge base"}, status=503)
        if request.content_type != "multipart/form-data":
            return web.json_response({"error": "send the file as multipart/form-data"}, status=415)
        reader = await request.multipart()
        tenant, saved, name = "", None, ""
        folder = Path(tempfile.mkdtemp(prefix="deskmate-import-"))
        try:
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "tenant":
                    tenant = (await part.text()).strip()[:128]
                elif part.name == "file" and part.filename:
                    name = Path(part.filename).name[:200]
                    suffix = Path(name).suffix.lower()
                    if not detect_format(Path(name)):
                        return web.json_response(
                            {"error": "use a .csv, .tsv, .json, .jsonl or .md file"}, status=400
                        )
                    saved = folder / f"upload{suffix}"
                    size = 0
                    with saved.open("wb") as out:
                        while chunk := await part.read_chunk(64 * 1024):
                            size += len(chunk)
                            if size > MAX_IMPORT_BYTES:
                                return web.json_response(
                                    {"error": "the file is larger than 20 MB"}, status=413
                                )
                            out.write(chunk)
            if saved is None:
                return web.json_response({"error": "choose a file to import"}, status=400)
        except BaseException:
            _remove(folder)
            raise
        job = ImportJob(id=uuid.uuid4().hex, name=name, tenant=tenant)
        job.task = asyncio.create_task(self._import(kb, job, saved, folder))
        self._imports[job.id] = job
        while len(self._imports) > 50:
            self._imports.popitem(last=False)
        log.info("console: importing %s into the FAQ", name)
        return web.json_response(job.as_json(), status=202)

    async def _import(self, kb: KnowledgeBase, job: ImportJob, path: Path, folder: Path) -> None:
        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        try:
            report = await kb.import_file(path, tenant=job.tenant, progress=progress)
            report.path = job.name
            job.report = report.lines()
        except (KnowledgeImportError, StorageError, DeskmateError) as exc:
            job.error = getattr(exc, "user_message", "") or str(exc)
        except Exception as exc:
            log.exception("console: import of %s failed", job.name)
            job.error = f"the import failed: {exc}"
        finally:
            job.finished = True
            _remove(folder)

    async def import_status(self, request: web.Request) -> web.StreamResponse:
        job = self._imports.get(request.match_info["job"])
        if job is None:
            return web.json_response({"error": "no such import"}, status=404)
        return web.json_response(job.as_json())

    async def _not_found(self, request: web.Request, text: str) -> web.Response:
        return self._render(
            request, "missing.html", status=404, text=text, **await self._page_values(request)
        )


# -- helpers -----------------------------------------------------------------------------


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _secure(response: web.StreamResponse) -> web.StreamResponse:
    headers = response.headers
    headers.setdefault("Cache-Control", "no-store")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    # Sign-in links carry a secret in the address: never pass it to another site.
    # ("no-referrer" would also make browsers send "Origin: null" on our own forms.)
    headers.setdefault("Referrer-Policy", "same-origin")
    return response


def _same_origin(request: web.Request) -> bool:
    """False when the browser says the request came from another site."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return origin.split("://", 1)[-1] == request.host


def _safe_next(target: str) -> str:
    # Only back into the console: never an open redirect to another site.
    if target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return ""


def _tenant(request: web.Request) -> str | None:
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


def _period(request: web.Request) -> tuple[date, date]:
    today = datetime.now(UTC).date()
    until = _date(request.query.get("until", "")) or today
    since = _date(request.query.get("since", ""))
    if since is None:
        days = _int(request.query.get("days", "14")) or 14
        since = until - timedelta(days=min(days, MAX_PERIOD_DAYS) - 1)
    if since > until:
        since, until = until, since
    if (until - since).days >= MAX_PERIOD_DAYS:
        since = until - timedelta(days=MAX_PERIOD_DAYS - 1)
    return since, until


def _rating_rows(figures: Overview) -> list[tuple[str, list[int], float]]:
    """(day, count per rating series, share of 👍) for each day with a rating."""
    rows = []
    for d in figures.days:
        counts = [per_day.get(d, 0) for per_day in figures.ratings.values()]
        good = sum(
            n for name, n in zip(figures.ratings, counts, strict=True) if name.endswith("good")
        )
        if sum(counts):
            rows.append((d, counts, good / sum(counts)))
    return rows


def _when(value: datetime | None) -> Markup | str:
    if value is None:
        return "—"
    utc = value.astimezone(UTC)
    return Markup('<time datetime="{}">{}</time>').format(
        utc.isoformat(timespec="seconds"), utc.strftime("%Y-%m-%d %H:%M")
    )


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _remove(folder: Path) -> None:
    import shutil

    with contextlib.suppress(OSError):
        shutil.rmtree(folder)
