"""``deskmate docs add|list|remove|sync``: documents from the shell.

``register(subparsers)`` adds the ``docs`` command to the main CLI's parser;
``run(args, settings)`` executes it. Each document's outcome is one line on
stdout (errors included, per document); progress goes to stderr. The exit
status is 1 when any document failed, after the rest were stored.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from bot.app import create_document_library, create_knowledge_base, create_team
from bot.errors import CONFIG_ERRORS, FAILURES
from bot.knowledge.documents.library import DocumentLibrary, DocumentReport
from bot.settings import Settings
from storage.db import Database
from storage.documents_repo import DocumentRecord


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    docs = subparsers.add_parser("docs", help="manage the documents the bot answers from")
    sub = docs.add_subparsers(dest="docs_command", required=True, metavar="DOCS_COMMAND")
    add = sub.add_parser(
        "add",
        help="add files, folders (recursively) and web pages or sites",
        description="Markdown, HTML, PDF (text layer), DOCX and plain text. A URL is crawled "
        "within its host (links, or the pages a sitemap.xml lists), honouring robots.txt. "
        "A document that cannot be read is reported; the others are added.",
    )
    add.add_argument("paths", nargs="+", metavar="PATH_OR_URL")
    add.add_argument("--tenant", default="", help="only this tenant sees the documents")
    add.add_argument(
        "--internal", action="store_true", help="for agents only: never quoted to customers"
    )
    add.add_argument("--depth", type=int, default=None, help="links followed from a start URL")
    add.add_argument("--max-pages", type=int, default=None, help="pages read per site at most")
    ls = sub.add_parser("list", help="the documents: id, title, path or URL, chunks, last sync")
    ls.add_argument("--json", action="store_true", help="one JSON object per document")
    ls.add_argument("--tenant", default=None, help="only this tenant's ('' = shared)")
    rm = sub.add_parser("remove", help="remove a document (or all under a folder or start URL)")
    rm.add_argument("ident", metavar="ID_OR_PATH_OR_URL")
    sy = sub.add_parser("sync", help="re-read what changed, drop what vanished, add new pages")
    sy.add_argument("--tenant", default=None, help="only this tenant's ('' = shared)")


class _Progress:
    """One line per step on stderr (rewritten in place on a terminal)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, done: int, total: int, what: str) -> None:
        if not what:
            if self.tty:
                self.stream.write("\n")
            return
        line = f"[{done}/{total}] {what}"
        if self.tty:
            self.stream.write(f"\r\x1b[K{line[:120]}")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def report_line(report: DocumentReport) -> str:
    where = report.name or report.location
    head = f"{report.status:<9} {where}"
    if report.status not in ("failed", "removed"):
        head += f" ({report.chunks} chunks)"
    return f"{head}: {report.error}" if report.error else head


def record_json(document: DocumentRecord) -> dict[str, Any]:
    return {
        "id": document.id,
        "title": document.title,
        "document": document.name,
        "location": document.location,
        "origin": document.origin,
        "tenant": document.tenant,
        "internal": document.internal,
        "format": document.format,
        "chunks": document.chunks,
        "last_sync": document.synced_at.isoformat() if document.synced_at else None,
        "error": document.error,
    }


async def run(
    args: argparse.Namespace,
    settings: Settings,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``docs add|list|remove|sync``; 0 on success, 1 when anything failed."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    db = Database(settings.effective_database_url)
    try:
        await db.upgrade()
        library = create_document_library(db, settings, create_knowledge_base(db, settings))
        assert library is not None
        command = args.docs_command
        if command == "list":
            return _list(await library.list(args.tenant), as_json=args.json, stdout=stdout)
        if command == "remove":
            gone = await library.remove(args.ident)
            for document in gone:
                print(f"removed   {document.id} {document.location}", file=stdout)
            if not gone:
                print(f"deskmate: no document is {args.ident}", file=stderr)
                return 1
            return 0
        progress = _Progress(stderr)
        if command == "sync":
            reports = await library.sync(args.tenant, progress=progress)
        else:
            reports = await _add(library, args, progress)
            added = sum(1 for r in reports if r.status in ("added", "updated"))
            if added:
                await create_team(db, settings).repository.audit(
                    args.tenant, "cli", "docs.add", " ".join(args.paths)[:200], {"added": added}
                )
        for report in reports:
            print(report_line(report), file=stdout)
        return 1 if any(r.status == "failed" for r in reports) else 0
    except CONFIG_ERRORS as exc:
        print(f"deskmate: {exc}", file=stderr)
        return 1
    except FAILURES as exc:
        print(f"deskmate: {getattr(exc, 'user_message', '') or exc}", file=stderr)
        return 1
    finally:
        await db.dispose()


async def _add(
    library: DocumentLibrary, args: argparse.Namespace, progress: _Progress
) -> list[DocumentReport]:
    urls = [p for p in args.paths if p.startswith(("http://", "https://"))]
    paths = [p for p in args.paths if p not in urls]
    reports: list[DocumentReport] = []
    if paths:
        reports += await library.add_paths(
            paths, tenant=args.tenant, internal=args.internal, progress=progress
        )
    for url in urls:
        reports += await library.add_url(
            url,
            tenant=args.tenant,
            internal=args.internal,
            crawl_site=args.depth != 0,
            max_pages=args.max_pages,
            max_depth=args.depth,
            progress=progress,
        )
    return reports


def _list(documents: Sequence[DocumentRecord], *, as_json: bool, stdout: TextIO) -> int:
    for document in documents:
        if as_json:
            print(json.dumps(record_json(document), ensure_ascii=False), file=stdout)
            continue
        synced = document.synced_at.strftime("%Y-%m-%d %H:%M") if document.synced_at else "never"
        flags = " [internal]" if document.internal else ""
        flags += f" [tenant {document.tenant}]" if document.tenant else ""
        line = (
            f"{document.id:>5}  {document.title[:50]:<50}  {document.location}  "
            f"{document.chunks} chunks  synced {synced}{flags}"
        )
        print(f"{line}  error: {document.error}" if document.error else line, file=stdout)
    if not documents and not as_json:
        print("no documents", file=stdout)
    return 0
