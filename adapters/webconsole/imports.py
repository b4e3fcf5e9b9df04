"""Importing a file into the FAQ from the console: an upload starts a job in the
background, and the page polls its progress."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from aiohttp import BodyPartReader, web

from adapters.webconsole.language import console_language
from adapters.webconsole.pages import ConsoleContext, Room
from bot.errors import DeskmateError, StorageError
from bot.knowledge.importer import KnowledgeImportError, RowIssue, detect_format
from bot.knowledge.knowledge_base import ImportReport, KnowledgeBase
from bot.messages import keys, say

log = logging.getLogger(__name__)

MAX_IMPORT_BYTES = 20 * 1024 * 1024
_KEYS = keys()


@dataclass(slots=True)
class ImportJob:
    id: str
    name: str
    tenant: str
    done: int = 0
    total: int = 0
    finished: bool = False
    report: ImportReport | None = None
    # Why the file as a whole was refused: the importer's own error, or English.
    problem: KnowledgeImportError | None = None
    error: str = ""
    task: asyncio.Task[None] | None = None

    def as_json(self, language: str) -> dict[str, object]:
        """The job as its page polls it, its report said in ``language``."""
        error = self.error
        if self.problem is not None:
            error = _file_problem(self.problem, language)
        return {
            "job": self.id,
            "name": self.name,
            "done": self.done,
            "total": self.total,
            "finished": self.finished,
            "report": report_lines(self.report, language) if self.report is not None else [],
            "error": error,
        }


def report_lines(report: ImportReport, language: str) -> list[str]:
    """``report`` as ``ImportReport.lines`` writes it, in ``language``."""
    counts = {
        "name": report.path,
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "skipped": len(report.skipped),
    }
    written = f"language.name_{report.language}"
    if written in _KEYS:
        first = say(
            "console.import.summary_language", language, **counts, language=say(written, language)
        )
    else:
        first = say("console.import.summary", language, **counts)
    return [first] + [
        say(
            "console.import.skipped",
            language,
            line=issue.line,
            reason=_row_problem(issue, language),
        )
        for issue in report.skipped
    ]


def _row_problem(issue: RowIssue, language: str) -> str:
    key = f"console.import.row.{issue.code}"
    return say(key, language, **issue.values) if key in _KEYS else issue.reason


def _file_problem(error: KnowledgeImportError, language: str) -> str:
    key = f"console.import.file.{error.reason}"
    return say(key, language, **error.values) if key in _KEYS else error.user_message


class ImportJobs(Room):
    """Upload a file to import (``start_import``) and ask how far it got
    (``import_status``); the latest 50 jobs are kept in memory."""

    def __init__(self, context: ConsoleContext) -> None:
        super().__init__(context)
        self._imports: OrderedDict[str, ImportJob] = OrderedDict()

    def cancel(self) -> None:
        """Stop the imports still running (the server is going down)."""
        for job in self._imports.values():
            if job.task is not None and not job.task.done():
                job.task.cancel()

    async def start_import(self, request: web.Request) -> web.StreamResponse:
        kb = self.knowledge
        if kb is None:
            return _refused(request, "console.knowledge.unavailable", 503)
        if request.content_type != "multipart/form-data":
            return _refused(request, "console.upload.multipart", 415)
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
                        return _refused(request, "console.import.format", 400)
                    saved = folder / f"upload{suffix}"
                    size = 0
                    with saved.open("wb") as out:
                        while chunk := await part.read_chunk(64 * 1024):
                            size += len(chunk)
                            if size > MAX_IMPORT_BYTES:
                                return _refused(request, "console.import.too_large", 413)
                            out.write(chunk)
            if saved is None:
                return _refused(request, "console.import.no_file", 400)
            if not self.reaches(request, tenant):
                _remove(folder)
                return await self._forbidden(
                    request, say("console.import.tenant", console_language(request))
                )
        except BaseException:
            _remove(folder)
            raise
        job = ImportJob(id=uuid.uuid4().hex, name=name, tenant=tenant)
        job.task = asyncio.create_task(self._import(kb, job, saved, folder))
        self._imports[job.id] = job
        while len(self._imports) > 50:
            self._imports.popitem(last=False)
        log.info("console: importing %s into the FAQ", name)
        return web.json_response(job.as_json(console_language(request)), status=202)

    async def _import(self, kb: KnowledgeBase, job: ImportJob, path: Path, folder: Path) -> None:
        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        try:
            report = await kb.import_file(path, tenant=job.tenant, progress=progress)
            report.path = job.name
            job.report = report
        except KnowledgeImportError as exc:
            job.problem = exc
        except (StorageError, DeskmateError) as exc:
            job.error = getattr(exc, "user_message", "") or str(exc)
        except Exception as exc:
            log.exception("console: import of %s failed", job.name)
            job.error = f"the import failed: {exc}"
        finally:
            job.finished = True
            _remove(folder)

    async def import_status(self, request: web.Request) -> web.StreamResponse:
        job = self._imports.get(request.match_info["job"])
        if job is None or not self.reaches(request, job.tenant):
            return _refused(request, "console.import.missing", 404)
        return web.json_response(job.as_json(console_language(request)))


def _remove(folder: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(folder)


def _refused(request: web.Request, key: str, status: int) -> web.Response:
    """A refusal the page's script shows, in the reader's language."""
    return web.json_response({"error": say(key, console_language(request))}, status=status)
