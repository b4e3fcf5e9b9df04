"""The document library: adding, listing, removing and syncing documents.

One service for the ``deskmate docs`` commands and the console. Each document
is read, cut into passages and embedded on its own: a document that cannot be
read is reported (and kept in the list with its error, so ``sync`` tries it
again), and the rest of the batch goes on. A passage whose embedded text did
not change keeps its stored vectors, so a sync embeds only what changed.

Where documents come from decides how ``sync`` checks them: a file by its
mtime and then its hash (a vanished file is removed), a web page by its ETag /
Last-Modified (a page the server says is gone is removed; a crawled site is
crawled again for new pages), an upload not at all (it changes when uploaded
again).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bot.knowledge.documents.chunking import Chunk, chunk_sections
from bot.knowledge.documents.crawl import Fetched, Fetcher, FetchError, crawl
from bot.knowledge.documents.parsing import DocumentError, format_of, parse
from llm.embeddings import Embedder
from storage.documents_repo import (
    ChunkInput,
    DocumentFields,
    DocumentRecord,
    DocumentsRepository,
)

# (done, total, what): progress of long work, for the terminal.
Progress = Callable[[int, int, str], None]
FILE, URL, UPLOAD = "file", "url", "upload"


@dataclass(frozen=True, slots=True)
class DocumentReport:
    """What happened to one document: ``status`` is added, updated,
    unchanged, removed or failed; ``error`` says why it failed (or what was
    worked around, such as an encoding), in English; ``reason`` and
    ``values`` name a failure for a page in its reader's language."""

    location: str
    name: str
    status: str
    chunks: int = 0
    error: str = ""
    id: int | None = None
    title: str = ""
    reason: str = ""
    values: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = 50 * 1024 * 1024
    timeout: float = 20.0
    max_pages: int = 200
    max_depth: int = 3


def _quiet(done: int, total: int, what: str) -> None:
    return None


class DocumentLibrary:
    """Documents of every tenant ("" for the shared ones), on ``repository``."""

    def __init__(
        self,
        *,
        repository: DocumentsRepository,
        embedder: Embedder,
        limits: Limits | None = None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        """``on_change`` runs after passages changed (this process's index refreshes)."""
        self.repository = repository
        self.embedder = embedder
        self.limits = limits or Limits()
        self.on_change = on_change

    # -- adding --------------------------------------------------------------------

    async def add_paths(
        self,
        paths: Sequence[str | Path],
        *,
        tenant: str = "",
        internal: bool = False,
        progress: Progress = _quiet,
    ) -> list[DocumentReport]:
        """Files and folders (recursively, files of a known format); a path
        that does not exist is reported."""
        jobs, missing = await asyncio.to_thread(_expand, paths)
        reports = [
            DocumentReport(path, path, "failed", error="no such file", reason="no_file")
            for path in missing
        ]
        known = {d.location: d for d in await self.repository.documents(tenant)}
        for number, (file, name, root) in enumerate(jobs, start=1):
            progress(number - 1, len(jobs), name)
            fields = DocumentFields(tenant, internal, FILE, str(file), name, root)
            reports.append(await self._read_file(fields, known.get(str(file)), force=True))
        progress(len(jobs), len(jobs), "")
        return reports

    async def add_upload(
        self, name: str, data: bytes, tenant: str = "", internal: bool = False
    ) -> DocumentReport:
        """A document uploaded in the console, kept in the database."""
        name = Path(name).name or "upload"
        fields = DocumentFields(tenant, internal, UPLOAD, f"upload:{name}", name, content=data)
        return await self._ingest(fields, data, format_of(name))

    async def add_url(
        self,
        url: str,
        *,
        tenant: str = "",
        internal: bool = False,
        crawl_site: bool = True,
        max_pages: int | None = None,
        max_depth: int | None = None,
        progress: Progress = _quiet,
    ) -> list[DocumentReport]:
        """A page, or (``crawl_site``) the pages of its site it links to within
        the limits; a ``sitemap.xml`` URL reads the pages it lists."""
        limits = self.limits
        pages = max_pages if max_pages is not None else limits.max_pages
        depth = max_depth if max_depth is not None else limits.max_depth
        root = url if crawl_site else ""
        return await self._crawl(
            url,
            tenant,
            internal,
            root,
            pages,
            depth if crawl_site else 0,
            progress,
            skip=lambda u: False,
        )

    async def _crawl(
        self,
        start: str,
        tenant: str,
        internal: bool,
        root: str,
        max_pages: int,
        max_depth: int,
        progress: Progress,
        *,
        skip: Callable[[str], bool],
    ) -> list[DocumentReport]:
        fetched: list[Fetched] = []
        failed: list[tuple[str, str]] = []

        def page(item: Fetched) -> None:
            fetched.append(item)
            progress(len(fetched), max_pages, item.url)

        async with Fetcher(timeout=self.limits.timeout, max_bytes=self.limits.max_bytes) as f:
            await crawl(
                f,
                start,
                max_pages=max_pages,
                max_depth=max_depth,
                on_page=page,
                on_error=lambda url, error: failed.append((url, error)),
                skip=skip,
            )
        reports = [_failure(url, url, error) for url, error in failed]
        for number, item in enumerate(fetched, start=1):
            progress(number, len(fetched), f"indexing {item.url}")
            fields = DocumentFields(
                tenant,
                internal,
                URL,
                item.url,
                item.url,
                root,
                etag=item.etag,
                last_modified=item.last_modified,
            )
            reports.append(
                await self._ingest(fields, item.data, format_of(item.url, item.content_type))
            )
        return reports

    # -- reading one document ------------------------------------------------------

    async def _read_file(
        self, fields: DocumentFields, known: DocumentRecord | None, *, force: bool = False
    ) -> DocumentReport:
        path = Path(fields.location)
        try:
            stat = await asyncio.to_thread(path.stat)
        except OSError as exc:
            why = f"cannot be read ({exc.strerror})"
            return await self._failed(fields, DocumentError(why, "unreadable", error=exc.strerror))
        if stat.st_size > self.limits.max_bytes:
            return await self._failed(fields, self._too_large(stat.st_size))
        if known is not None and not force and known.mtime == stat.st_mtime and not known.error:
            return _report(known, "unchanged")
        data = await asyncio.to_thread(path.read_bytes)
        digest = hashlib.sha256(data).hexdigest()
        if known is not None and known.content_hash == digest and not known.error:
            await self.repository.note(known.id, error="", mtime=stat.st_mtime)
            return _report(known, "unchanged")
        fields = _with(fields, mtime=stat.st_mtime)
        return await self._ingest(fields, data, format_of(path.name))

    async def _ingest(self, fields: DocumentFields, data: bytes, fmt: str | None) -> DocumentReport:
        """Parse, chunk, embed (only what changed) and store one document."""
        if len(data) > self.limits.max_bytes:
            return await self._failed(fields, self._too_large(len(data)))
        if fmt is None:
            why = "unknown format (use .md, .html, .pdf, .docx or .txt)"
            return await self._failed(fields, DocumentError(why, "unknown_format"))
        try:
            parsed = await asyncio.to_thread(parse, data, name=fields.name, fmt=fmt)
        except DocumentError as exc:
            return await self._failed(fields, exc)
        chunks = chunk_sections(parsed.sections)
        known = {d.location: d for d in await self.repository.documents(fields.tenant)}
        previous = known.get(fields.location)
        reuse = await self.repository.vectors(previous.id) if previous is not None else {}
        stored = await self._embed(chunks, parsed.title, reuse)
        fields = _with(
            fields,
            title=parsed.title,
            format=fmt,
            content_hash=hashlib.sha256(data).hexdigest(),
            error="; ".join(parsed.warnings),
            error_reason=_named("read_as", encoding=parsed.read_as) if parsed.read_as else "",
        )
        record = await self.repository.save(fields, stored)
        self.on_change()
        status = "added" if previous is None else "updated"
        report = _report(record, status, error=fields.error)
        if parsed.read_as:
            report = replace(report, reason="read_as", values={"encoding": parsed.read_as})
        return report

    async def _embed(
        self, chunks: Sequence[Chunk], title: str, reuse: dict[str, tuple[bytes, str]]
    ) -> list[ChunkInput]:
        model = self.embedder.name
        hashes = [c.hash(title) for c in chunks]
        fresh = [i for i, h in enumerate(hashes) if reuse.get(h, (b"", ""))[1] != model]
        texts = [t for i in fresh for t in chunks[i].embedded_texts(title)]
        vectors = await asyncio.to_thread(self.embedder.embed, texts) if texts else None
        blobs = {h: blob for h, (blob, m) in reuse.items() if m == model}
        for n, i in enumerate(fresh):
            assert vectors is not None
            pair = np.asarray(vectors[2 * n : 2 * n + 2], dtype="<f4")
            blobs[hashes[i]] = np.ascontiguousarray(pair).tobytes()
        return [
            ChunkInput(n, c.section, c.anchor, c.page, c.text, hashes[n], blobs[hashes[n]], model)
            for n, c in enumerate(chunks)
        ]

    def _too_large(self, size: int) -> DocumentError:
        limit = self.limits.max_bytes
        why = f"over the size limit ({size} > {limit} bytes)"
        return DocumentError(why, "too_large", size=size, limit=limit)

    async def _failed(self, fields: DocumentFields, error: DocumentError) -> DocumentReport:
        """Keep the document listed with its error; passages it had stay."""
        reason = _named(error.reason, **error.values) if error.reason else ""
        changed = _with(fields, error=str(error), error_reason=reason)
        record = await self.repository.save(changed, None)
        return _failure(record.location, record.name, error, record)

    # -- listing, removing, syncing ------------------------------------------------

    async def list(self, tenant: str | None = None) -> list[DocumentRecord]:
        """Every document (``tenant``'s only, when given)."""
        return await self.repository.documents(tenant)

    async def remove(self, ident: str, tenant: str | None = None) -> list[DocumentRecord]:
        """The document with this id, path or URL, or every document found
        under this folder or start URL. Returns what was removed."""
        path = ident if _is_url(ident) else str(await asyncio.to_thread(_resolved, ident))
        gone = [
            d
            for d in await self.repository.documents(tenant)
            if str(d.id) == ident
            or d.location in (ident, path)
            or d.root in (ident, path)
            or d.name == ident
        ]
        for document in gone:
            await self.repository.remove(document.id)
        if gone:
            self.on_change()
        return gone

    async def sync(
        self, tenant: str | None = None, *, progress: Progress = _quiet
    ) -> list[DocumentReport]:
        """Re-read what changed, drop what vanished, add new files and pages
        found under the folders and sites documents were added from."""
        documents = await self.repository.documents(tenant)
        reports: list[DocumentReport] = []
        for number, document in enumerate(documents, start=1):
            progress(number - 1, len(documents), document.name)
            if document.origin == FILE:
                reports.append(await self._sync_file(document))
            elif document.origin == URL:
                reports.append(await self._sync_url(document))
            else:
                reports.append(_report(document, "unchanged"))
        reports += await self._new_under_roots(documents, progress)
        progress(len(documents), len(documents), "")
        return reports

    async def _sync_file(self, document: DocumentRecord) -> DocumentReport:
        if not await asyncio.to_thread(Path(document.location).exists):
            await self.repository.remove(document.id)
            self.on_change()
            return _report(document, "removed")
        fields = _fields(document)
        return await self._read_file(fields, document)

    async def _sync_url(self, document: DocumentRecord) -> DocumentReport:
        fields = _fields(document)
        limits = self.limits
        try:
            async with Fetcher(timeout=limits.timeout, max_bytes=limits.max_bytes) as fetcher:
                page = await fetcher.get(
                    document.location,
                    etag="" if document.error else document.etag,
                    last_modified="" if document.error else document.last_modified,
                )
        except FetchError as exc:
            if exc.gone:
                await self.repository.remove(document.id)
                self.on_change()
                return _report(document, "removed")
            return await self._failed(fields, exc)
        if page.status == 304:
            await self.repository.note(document.id, error="")
            return _report(document, "unchanged")
        if hashlib.sha256(page.data).hexdigest() == document.content_hash and not document.error:
            await self.repository.note(
                document.id, error="", etag=page.etag, last_modified=page.last_modified
            )
            return _report(document, "unchanged")
        fields = _with(fields, etag=page.etag, last_modified=page.last_modified)
        return await self._ingest(fields, page.data, format_of(page.url, page.content_type))

    async def _new_under_roots(
        self, documents: Sequence[DocumentRecord], progress: Progress
    ) -> list[DocumentReport]:
        reports: list[DocumentReport] = []
        roots = {(d.tenant, d.internal, d.origin, d.root) for d in documents if d.root}
        for tenant, internal, origin, root in sorted(roots):
            known = {d.location for d in documents if d.tenant == tenant}
            if origin == FILE:
                found, _ = await asyncio.to_thread(_expand, [root])
                for file, name, _root in found:
                    if str(file) in known:
                        continue
                    fields = DocumentFields(tenant, internal, FILE, str(file), name, root)
                    reports.append(await self._read_file(fields, None))
            elif origin == URL:
                limits = self.limits
                reports += await self._crawl(
                    root,
                    tenant,
                    internal,
                    root,
                    limits.max_pages,
                    limits.max_depth,
                    progress,
                    skip=lambda url, known=known: url in known,  # type: ignore[misc]
                )
        return reports


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _expand(paths: Sequence[str | Path]) -> tuple[list[tuple[Path, str, str]], list[str]]:
    """(file, name, root) of each file to read, folders walked (files of a
    known format), and the paths that do not exist (blocking)."""
    jobs: list[tuple[Path, str, str]] = []
    missing: list[str] = []
    for raw in paths:
        path = _resolved(raw)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                if format_of(file.name) is not None:
                    jobs.append((file, file.relative_to(path).as_posix(), str(path)))
        elif path.is_file():
            jobs.append((path, path.name, ""))
        else:
            missing.append(str(raw))
    return jobs, missing


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _fields(document: DocumentRecord) -> DocumentFields:
    return DocumentFields(
        tenant=document.tenant,
        internal=document.internal,
        origin=document.origin,
        location=document.location,
        name=document.name,
        root=document.root,
        title=document.title,
        format=document.format,
        content_hash=document.content_hash,
        mtime=document.mtime,
        etag=document.etag,
        last_modified=document.last_modified,
    )


def _named(reason: str, **values: object) -> str:
    """A reason code and its values as the documents table keeps them."""
    return json.dumps({"reason": reason, "values": values}, default=str)


def _with(fields: DocumentFields, **changes: object) -> DocumentFields:
    return replace(fields, **changes)  # type: ignore[arg-type]


def _failure(
    location: str, name: str, error: DocumentError, record: DocumentRecord | None = None
) -> DocumentReport:
    return DocumentReport(
        location=location,
        name=name,
        status="failed",
        chunks=record.chunks if record is not None else 0,
        error=str(error),
        id=record.id if record is not None else None,
        title=record.title if record is not None else "",
        reason=error.reason,
        values=error.values,
    )


def _report(record: DocumentRecord, status: str, *, error: str | None = None) -> DocumentReport:
    return DocumentReport(
        location=record.location,
        name=record.name,
        status=status,
        chunks=record.chunks,
        error=record.error if error is None else error,
        id=record.id,
        title=record.title,
    )
