"""The console's Documents page: the documents the bot answers from, adding
them by upload or URL, syncing them, and trying a question against them.

Adding and syncing read, cut and embed whole documents (a crawl or a long PDF
takes a while), so each runs as a job in the background: the page starts it
with a fetch, polls its progress and shows its report per document. Every
action is recorded in the audit trail, as the chat's commands are, once it
has finished (with what it did).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from adapters.webconsole.language import console_language
from adapters.webconsole.pages import ConsoleContext, Room, _int, _redirect, _tenant
from bot.knowledge.documents.library import DocumentLibrary, DocumentReport
from bot.knowledge.importer import MAX_QUESTION_CHARS
from bot.messages import keys, say
from bot.plans import Escalate, Grounded, Verbatim
from storage.documents_repo import DocumentRecord
from storage.knowledge_repo import GLOBAL

log = logging.getLogger(__name__)

KEPT_JOBS = 50
MAX_URL_CHARS = 2000
TRY_PASSAGES = 8
_KEYS = keys()


@dataclass(slots=True)
class DocumentJob:
    """One add or sync running (or run) in the background."""

    id: str
    action: str  # add | sync
    what: str  # the upload's name, the URL, or what is synced
    tenant: str
    actor: str
    done: int = 0
    total: int = 0
    current: str = ""
    finished: bool = False
    reports: list[DocumentReport] = field(default_factory=list)
    error: str = ""
    task: asyncio.Task[None] | None = None
    # ``what`` as the page shows it (the audit keeps ``what``).
    shown: str = ""

    def progress(self, done: int, total: int, what: str) -> None:
        self.done, self.total, self.current = done, total, what

    def summary(self, language: str = "en") -> str:
        """ "2 added, 1 failed": how the documents of the job ended."""
        counts = Counter(r.status for r in self.reports)
        return ", ".join(
            say("console.docs.counted", language, count=n, status=_named(status, language))
            for status, n in sorted(counts.items())
        ) or say("console.docs.nothing", language)

    def as_json(self, language: str = "en") -> dict[str, object]:
        return {
            "job": self.id,
            "action": self.action,
            "action_name": say(f"console.docs.job.{self.action}", language),
            "what": self.shown or self.what,
            "tenant": self.tenant,
            "done": self.done,
            "total": self.total,
            "current": self.current,
            "finished": self.finished,
            "error": self.error,
            "summary": self.summary(language) if self.finished else "",
            "documents": [
                {
                    "name": r.name,
                    "status": r.status,
                    "chunks": r.chunks,
                    "error": document_problem(r, language),
                }
                for r in self.reports
            ],
        }

    def problems(self, language: str) -> list[tuple[str, str]]:
        """Each document that failed or needed a workaround, and why, in ``language``."""
        return [(r.name, document_problem(r, language)) for r in self.reports if r.error]


def document_problem(report: DocumentReport, language: str) -> str:
    """Why ``report``'s document failed, in ``language`` where the catalog says
    it (the library's English otherwise)."""
    key = f"console.docs.problem.{report.reason}"
    return say(key, language, **report.values) if key in _KEYS else report.error


def stored_problem(document: DocumentRecord, language: str) -> str:
    """Why ``document``'s last read failed, as ``document_problem`` says it,
    from what the library stored with it."""
    try:
        named = json.loads(document.error_reason) if document.error_reason else {}
    except ValueError:
        named = {}
    reason, values = named.get("reason", ""), named.get("values", {})
    key = f"console.docs.problem.{reason}"
    if key in _KEYS and isinstance(values, dict):
        return say(key, language, **values)
    return document.error


class DocumentPages(Room):
    """Listing documents, adding (upload, URL), syncing and removing them, and
    what the bot would answer from them."""

    def __init__(self, context: ConsoleContext) -> None:
        super().__init__(context)
        self._jobs: OrderedDict[str, DocumentJob] = OrderedDict()

    @property
    def library(self) -> DocumentLibrary | None:
        return self.services.documents

    def cancel(self) -> None:
        """Stop the jobs still running (the server is going down)."""
        for job in self._jobs.values():
            if job.task is not None and not job.task.done():
                job.task.cancel()

    # -- the page -------------------------------------------------------------------

    async def documents_page(self, request: web.Request) -> web.StreamResponse:
        library = self.library
        shown = _tenant(request)
        listed = await library.list(shown) if library is not None else []
        jobs = [
            j
            for j in reversed(self._jobs.values())
            if self.reaches(request, j.tenant) and (shown is None or j.tenant == shown)
        ]
        language = self.language(request)
        return self._render(
            request,
            "docs.html",
            nav="documents",
            available=library is not None,
            documents=listed,
            problems={d.id: stored_problem(d, language) for d in listed if d.error},
            chunks=sum(d.chunks for d in listed),
            jobs=jobs[:10],
            running=any(not j.finished for j in jobs),
            max_mb=library.limits.max_bytes // (1024 * 1024) if library is not None else 0,
            **await self._tried(request),
            **await self._page_values(request),
        )

    async def _tried(self, request: web.Request) -> dict[str, Any]:
        """What the bot would do with the page's question (``q``), asked in
        tenant ``as``: the plan and the best passages with their scores."""
        kb = self.knowledge
        question = request.query.get("q", "").strip()[:MAX_QUESTION_CHARS]
        asking = request.query.get("as", "").strip()
        if not self.reaches(request, asking or GLOBAL):
            asking = _tenant(request) or ""
        values: dict[str, Any] = {"question": question, "asking": asking, "tried": False}
        if kb is None or not question:
            return values
        considered = await kb.consider(
            question, tenant=asking or GLOBAL, conversation_key="console:try", shown=TRY_PASSAGES
        )
        plan = considered.plan
        values.update(
            tried=True,
            passages=considered.passages,
            decision=considered.decision,
            plan_name=type(plan).__name__,
            plan_text=plan.text if isinstance(plan, Verbatim | Escalate) else "",
            cited=plan.sources if isinstance(plan, Grounded) else "",
        )
        return values

    # -- starting work --------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.StreamResponse:
        library = self.library
        if library is None:
            return _refused(request, "console.docs.unavailable", 503)
        if request.content_type != "multipart/form-data":
            return _refused(request, "console.upload.multipart", 415)
        limit = library.limits.max_bytes
        fields: dict[str, str] = {}
        name, data = "", bytearray()
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file" and part.filename:
                name = part.filename.replace("\\", "/").rsplit("/", 1)[-1][:200]
                while chunk := await part.read_chunk(64 * 1024):
                    data += chunk
                    if len(data) > limit:
                        return _refused(
                            request, "console.docs.too_large", 413, mb=limit // (1024 * 1024)
                        )
            elif part.name in ("tenant", "internal"):
                fields[part.name] = (await part.text()).strip()[:128]
        if not name:
            return _refused(request, "console.docs.no_file", 400)
        if not data:
            return _refused(request, "console.docs.empty", 400, name=name)
        tenant, internal = fields.get("tenant", ""), fields.get("internal") == "yes"
        if not self.reaches(request, tenant):
            return await self._forbidden(
                request, say("console.docs.tenant", console_language(request))
            )
        body = bytes(data)

        async def work(job: DocumentJob) -> list[DocumentReport]:
            job.progress(0, 1, name)
            report = await library.add_upload(name, body, tenant=tenant, internal=internal)
            job.progress(1, 1, "")
            return [report]

        return self._start(request, "add", name, tenant, work, internal=internal)

    async def add_url(self, request: web.Request) -> web.StreamResponse:
        library = self.library
        if library is None:
            return _refused(request, "console.docs.unavailable", 503)
        form = request["form"]
        url = str(form.get("url", "")).strip()
        if not url.startswith(("http://", "https://")) or len(url) > MAX_URL_CHARS:
            return _refused(request, "console.docs.bad_url", 400)
        tenant, internal = str(form.get("tenant", "")).strip(), form.get("internal") == "yes"
        crawl_site = form.get("crawl") == "yes"
        if not self.reaches(request, tenant):
            return await self._forbidden(
                request, say("console.docs.tenant", console_language(request))
            )

        async def work(job: DocumentJob) -> list[DocumentReport]:
            return await library.add_url(
                url, tenant=tenant, internal=internal, crawl_site=crawl_site, progress=job.progress
            )

        return self._start(request, "add", url, tenant, work, internal=internal, crawl=crawl_site)

    async def sync(self, request: web.Request) -> web.StreamResponse:
        library = self.library
        if library is None:
            return _refused(request, "console.docs.unavailable", 503)
        raw = str(request["form"].get("tenant", "")).strip()
        language = console_language(request)
        # "" syncs every tenant's documents: an owner's reach only.
        tenant: str | None = None if raw == "*" else raw
        if tenant is None and request.get("reached") is not None:
            return await self._forbidden(request, say("console.docs.sync_all", language))
        if tenant is not None and not self.reaches(request, tenant):
            return await self._forbidden(request, say("console.docs.tenant", language))
        what = "every tenant" if tenant is None else tenant or "shared documents"
        shown = (
            say("console.docs.every_tenant", language)
            if tenant is None
            else tenant or say("console.docs.shared_documents", language)
        )

        async def work(job: DocumentJob) -> list[DocumentReport]:
            return await library.sync(tenant, progress=job.progress)

        return self._start(request, "sync", what, tenant or "", work, shown=shown)

    def _start(
        self,
        request: web.Request,
        action: str,
        what: str,
        tenant: str,
        work: Callable[[DocumentJob], Awaitable[list[DocumentReport]]],
        shown: str = "",
        **details: object,
    ) -> web.Response:
        job = DocumentJob(uuid.uuid4().hex, action, what, tenant, self.viewer(request).actor)
        job.shown = shown
        job.task = asyncio.create_task(self._run(job, work, details))
        self._jobs[job.id] = job
        while len(self._jobs) > KEPT_JOBS:
            self._jobs.popitem(last=False)
        log.info("console: %s of %s started by %s", action, what, job.actor)
        return web.json_response(job.as_json(console_language(request)), status=202)

    async def _run(
        self,
        job: DocumentJob,
        work: Callable[[DocumentJob], Awaitable[list[DocumentReport]]],
        details: dict[str, object],
    ) -> None:
        try:
            job.reports = await work(job)
        except asyncio.CancelledError:
            job.error = "stopped: the server went down"
            raise
        except Exception as exc:
            # The library reports each document's own failure; what lands here
            # (the database away, a bug) ends the whole job.
            log.exception("console: %s of %s failed", job.action, job.what)
            job.error = getattr(exc, "user_message", "") or f"the {job.action} failed: {exc}"
        finally:
            job.finished = True
            failed = [r for r in job.reports if r.status == "failed"]
            await self.team.audit(
                job.tenant,
                job.actor,
                f"docs.{job.action}",
                job.what,
                {
                    **details,
                    "documents": len(job.reports),
                    "chunks": sum(r.chunks for r in job.reports if r.status != "failed"),
                    "outcome": job.summary(),
                    "failed": [f"{r.name}: {r.error}" for r in failed][:20],
                    "error": job.error,
                    "via": "console",
                },
            )
            log.info("console: %s of %s: %s", job.action, job.what, job.error or job.summary())

    async def job_status(self, request: web.Request) -> web.StreamResponse:
        job = self._jobs.get(request.match_info["job"])
        if job is None or not self.reaches(request, job.tenant):
            return _refused(request, "console.docs.no_job", 404)
        return web.json_response(job.as_json(console_language(request)))

    # -- removing -------------------------------------------------------------------

    async def remove(self, request: web.Request) -> web.StreamResponse:
        library = self.library
        language = console_language(request)
        if library is None:
            raise web.HTTPNotFound(text=say("console.docs.unavailable", language))
        wanted = _int(request.match_info["id"])
        found = [d for d in await library.list() if d.id == wanted]
        if not found:
            raise web.HTTPNotFound(text=say("console.docs.missing", language))
        document = found[0]
        if not self.reaches(request, document.tenant):
            return await self._forbidden(
                request, say("console.docs.what_named", language, name=document.name)
            )
        gone = await library.remove(str(document.id), tenant=document.tenant)
        await self.team.audit(
            document.tenant,
            self.viewer(request).actor,
            "docs.remove",
            document.location,
            {"chunks": sum(d.chunks for d in gone), "via": "console"},
        )
        log.info("console: document %s removed", document.location)
        self._say(
            request,
            say(
                "console.docs.removed",
                language,
                name=document.title or document.name,
                chunks=document.chunks,
            ),
        )
        return _redirect("/console/documents")


def _named(status: str, language: str) -> str:
    """A document's outcome (added, updated, failed, …) in ``language``."""
    key = f"console.docs.status.{status}"
    return say(key, language) if key in _KEYS else status


def _refused(request: web.Request, key: str, status: int, **values: object) -> web.Response:
    """A refusal the page's script shows, in the reader's language."""
    text = say(key, console_language(request), **values)
    return web.json_response({"error": text}, status=status)
