"""Reading documents into sections: text under one heading path, with the
nearest heading's anchor and (for PDFs) the page.

One reader per format, each on a well-kept library (README.md says why each):
Markdown (markdown-it-py), HTML (BeautifulSoup over lxml, boilerplate
removed), PDF (pypdf's text layer, its outline for headings), DOCX
(python-docx, after a check of the zip's sizes) and plain text (UTF-8, else
the encoding charset-normalizer detects). Every problem a reader cannot get
past is a ``DocumentError`` whose message the operator is shown.
"""

from __future__ import annotations

import io
import re
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

FORMATS = ("markdown", "html", "pdf", "docx", "text")
_EXTENSIONS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
}
_CONTENT_TYPES = {
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/plain": "text",
}
# A DOCX is a zip: its parts may inflate to at most this, and no part by more
# than this ratio (ordinary documents stay far under both).
MAX_UNZIPPED = 200 * 1024 * 1024
MAX_RATIO = 200


class DocumentError(Exception):
    """A document that cannot be read; the message says why, for the operator
    (in English, as the CLI prints it). ``reason`` and ``values`` name it for a
    page that says it in its reader's language (the console)."""

    def __init__(self, message: str, reason: str = "", **values: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.values = values


@dataclass(frozen=True, slots=True)
class Section:
    """Text under one heading path (outermost first)."""

    path: tuple[str, ...]
    anchor: str
    page: int | None
    text: str


@dataclass(slots=True)
class ParsedDocument:
    title: str
    format: str
    sections: list[Section]
    warnings: list[str] = field(default_factory=list)
    # The encoding a text that was not UTF-8 was read as ("" when it was UTF-8).
    read_as: str = ""

    def note_encoding(self, encoding: str) -> None:
        """Warn that the text was read as ``encoding`` (nothing for UTF-8)."""
        if encoding:
            self.read_as = encoding
            self.warnings.append(f"not UTF-8; read as {encoding}")


def format_of(name: str, content_type: str = "") -> str | None:
    """The format of a file name or an HTTP content type (None: not one we read)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind in _CONTENT_TYPES and kind != "text/plain":
        return _CONTENT_TYPES[kind]
    by_name = _EXTENSIONS.get(PurePosixPath(name.lower()).suffix)
    return by_name or _CONTENT_TYPES.get(kind)


def parse(data: bytes, *, name: str, fmt: str) -> ParsedDocument:
    """Read ``data`` as ``fmt`` (blocking; heavy documents take a while)."""
    readers = {
        "markdown": parse_markdown,
        "html": parse_html,
        "pdf": parse_pdf,
        "docx": parse_docx,
        "text": parse_text,
    }
    if fmt not in readers:
        raise DocumentError(f"unsupported format {fmt!r}", "format", format=fmt)
    parsed = readers[fmt](data, name)
    if not any(s.text.strip() for s in parsed.sections):
        raise DocumentError("no text found in it", "no_text")
    return parsed


def slug(heading: str) -> str:
    """A heading's anchor as Markdown renderers make it ("Opening hours" -> "opening-hours")."""
    text = unicodedata.normalize("NFKC", heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return re.sub(r"\s", "-", text.strip())


def _stem(name: str) -> str:
    return PurePosixPath(name).stem.replace("_", " ").replace("-", " ").strip() or name


# -- text ----------------------------------------------------------------------------


def decode_text(data: bytes) -> tuple[str, str]:
    """The text of ``data`` and the encoding it was read as when it was not
    UTF-8 ("" when it was)."""
    if b"\x00" in data[:8192]:
        raise DocumentError("binary data, not text", "binary")
    try:
        return data.decode("utf-8-sig"), ""
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None or best.encoding is None:
        raise DocumentError("not UTF-8, and its encoding could not be detected", "encoding")
    return str(best), best.encoding


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def parse_text(data: bytes, name: str) -> ParsedDocument:
    text, encoding = decode_text(data)
    body = "\n\n".join(_paragraphs(text))
    doc = ParsedDocument(_stem(name), "text", [Section((), "", None, body)])
    doc.note_encoding(encoding)
    return doc


# -- Markdown ------------------------------------------------------------------------


def parse_markdown(data: bytes, name: str) -> ParsedDocument:
    from markdown_it import MarkdownIt

    source, encoding = decode_text(data)
    tokens = MarkdownIt("commonmark").enable("table").parse(source)
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    anchor = ""
    parts: list[str] = []
    title = ""

    def close() -> None:
        if parts:
            sections.append(Section(tuple(t for _, t in path), anchor, None, "\n\n".join(parts)))
            parts.clear()

    heading_level = 0
    for token in tokens:
        if token.type == "heading_open":
            close()
            heading_level = int(token.tag[1])
        elif token.type == "inline" and heading_level:
            heading = " ".join(token.content.split())
            path = [(lv, t) for lv, t in path if lv < heading_level] + [(heading_level, heading)]
            anchor = slug(heading)
            title = title or (heading if heading_level == 1 else "")
            heading_level = 0
        elif token.type == "inline" or token.type in ("fence", "code_block"):
            text = " ".join(token.content.split())
            if text:
                parts.append(text)
    close()
    doc = ParsedDocument(title or _stem(name), "markdown", sections)
    doc.note_encoding(encoding)
    return doc


# -- HTML ----------------------------------------------------------------------------

_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_BLOCKS = ("p", "li", "pre", "dt", "dd", "td", "th", "blockquote", "figcaption", "caption")
_BOILERPLATE_TAGS = ("script", "style", "nav", "header", "footer", "aside", "form", "noscript")
_BOILERPLATE_NAMES = re.compile(
    r"^(nav|navbar|navheader|navfooter|navigation|toc|table-of-contents|breadcrumbs?|"
    r"sidebar|menu|site-header|site-footer|footer|cookie-banner|skip-link)$",
    re.IGNORECASE,
)


def _boilerplate(tag: Any) -> bool:
    if tag.name in _BOILERPLATE_TAGS or tag.get("role") in ("navigation", "banner", "contentinfo"):
        return True
    names = [*tag.get("class", []), tag.get("id") or ""]
    return any(_BOILERPLATE_NAMES.match(n) for n in names if n)


def _anchor_of(heading: Any) -> str:
    """The id a link to this heading uses: its own, one inside it, or that of
    the section it opens."""
    if heading.get("id"):
        return str(heading["id"])
    inner = heading.find(lambda t: t.get("id") or (t.name == "a" and t.get("name")))
    if inner is not None:
        return str(inner.get("id") or inner.get("name"))
    parent = heading.parent
    for _ in range(4):
        if parent is None or parent.name in ("body", "main", "article"):
            break
        if parent.get("id"):
            return str(parent["id"])
        parent = parent.parent
    return ""


def parse_html(data: bytes, name: str) -> ParsedDocument:
    from bs4 import BeautifulSoup

    try:
        soup = BeautifulSoup(data, "lxml")
    except Exception as exc:  # lxml gives up only on input that is not markup at all
        raise DocumentError(f"malformed HTML ({exc})", "bad_html", error=str(exc)) from exc
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text(" ").split()) if title_tag is not None else ""
    for tag in soup.find_all(_boilerplate):
        if not tag.decomposed:
            tag.decompose()
    root = soup.find("main") or soup.find(attrs={"role": "main"}) or soup.find("article")
    root = root or soup.body or soup
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    anchor = ""
    parts: list[str] = []
    wanted = set(_HEADINGS) | set(_BLOCKS)

    def close() -> None:
        if parts:
            sections.append(Section(tuple(t for _, t in path), anchor, None, "\n\n".join(parts)))
            parts.clear()

    for tag in root.find_all(list(wanted)):
        if tag.name not in _HEADINGS and tag.find_parent(_BLOCKS) is not None:
            continue  # its text is in the enclosing block's
        text = " ".join(tag.get_text(" ").split())
        if tag.name in _HEADINGS:
            if not text:
                continue
            close()
            level = int(tag.name[1])
            path = [(lv, t) for lv, t in path if lv < level] + [(level, text)]
            anchor = _anchor_of(tag)
            title = title or text
        elif text:
            parts.append(text)
    close()
    if not sections:
        # Pages without block markup: the visible text, as one section.
        text = "\n\n".join(_paragraphs(root.get_text("\n\n")))
        sections = [Section((), "", None, text)] if text else []
    if not sections:
        raise DocumentError("no readable text: malformed or empty HTML", "empty_html")
    return ParsedDocument(title or _stem(name), "html", sections)


# -- PDF -----------------------------------------------------------------------------


def _outline(reader: Any) -> list[tuple[int, tuple[str, ...]]]:
    """(0-based page, heading path) of the PDF's bookmarks, in page order."""
    found: list[tuple[int, tuple[str, ...]]] = []

    def walk(items: list[Any], path: tuple[str, ...]) -> None:
        last: tuple[str, ...] = path
        for item in items:
            if isinstance(item, list):
                walk(item, last)
                continue
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # a bookmark to nowhere names no section
                continue
            last = (*path, " ".join(str(item.title).split()))
            found.append((page, last))

    try:
        walk(list(reader.outline), ())
    except Exception:  # a damaged outline: pages without headings
        return []
    return sorted(found, key=lambda item: item[0])


def parse_pdf(data: bytes, name: str) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError("encrypted PDF; it needs a password", "encrypted_pdf")
        pages = _page_texts(data)
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise DocumentError(f"not a readable PDF ({exc})", "bad_pdf", error=str(exc)) from exc
    except Exception as exc:  # pypdf raises many kinds on damaged files
        if "crypt" in str(exc).lower() or "AES" in str(exc):
            raise DocumentError("encrypted PDF; it needs a password", "encrypted_pdf") from exc
        raise DocumentError(f"not a readable PDF ({exc})", "bad_pdf", error=str(exc)) from exc
    if not any(p.strip() for p in pages):
        raise DocumentError("no text layer; it needs OCR", "no_text_layer")
    meta_title = ""
    try:
        meta_title = str((reader.metadata or {}).get("/Title") or "").strip()
    except Exception:  # metadata is optional and often damaged
        meta_title = ""
    outline = _outline(reader)
    sections = list(_pdf_sections(pages, outline))
    first_line = next((line.strip() for p in pages for line in p.splitlines() if line.strip()), "")
    return ParsedDocument(meta_title or first_line[:120] or _stem(name), "pdf", sections)


def _page_texts(data: bytes) -> list[str]:
    """Each page's text layer, running heads, page numbers and contents
    listings left out. pdfium keeps the spaces between words that LaTeX
    output encodes as positions (pypdf runs such words together)."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(data)
    try:
        texts = []
        for page in document:
            textpage = page.get_textpage()
            texts.append(_body(textpage.get_text_bounded()))
            textpage.close()
            page.close()
        return texts
    finally:
        document.close()


_LEADER = re.compile(r"(\.\s*){4,}\S*\s*$")
_HYPHENATED = re.compile(r"(\w)-\n(\w)")


def _running(line: str) -> bool:
    """A running head or foot: a page number, or a line in capitals."""
    letters = [c for c in line if c.isalpha()]
    if not letters:
        return True
    return len(letters) > 10 and sum(c.isupper() for c in letters) / len(letters) > 0.7


def _body(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").split("\n")]
    lines = [line for line in lines if line]
    if lines and _running(lines[0]):
        lines = lines[1:]
    if lines and _running(lines[-1]):
        lines = lines[:-1]
    leaders = sum(1 for line in lines if _LEADER.search(line))
    if lines and leaders >= len(lines) / 3:
        return ""  # a table of contents
    return _HYPHENATED.sub(r"\1\2", "\n".join(lines))


def _pdf_sections(
    pages: list[str], outline: list[tuple[int, tuple[str, ...]]]
) -> Iterator[Section]:
    current: tuple[str, ...] = ()
    for number, text in enumerate(pages):
        starts = [path for page, path in outline if page == number]
        before = [path for page, path in outline if page < number]
        current = before[-1] if before else current
        pieces: list[tuple[tuple[str, ...], str]] = []
        rest, path = text, current
        for heading in starts:
            at = rest.lower().find(heading[-1].lower()) if heading[-1] else -1
            if at > 0:
                pieces.append((path, rest[:at]))
                rest = rest[at:]
            path = heading
        pieces.append((path, rest))
        current = path
        for section_path, piece in pieces:
            body = "\n\n".join(_paragraphs(piece)) or " ".join(piece.split())
            heading = section_path[-1] if section_path else ""
            if heading and body.lower().startswith(heading.lower()):
                body = body[len(heading) :].strip()  # the heading is in the path already
            if body:
                yield Section(section_path, "", number + 1, body)


# -- DOCX ----------------------------------------------------------------------------


def check_zip(data: bytes) -> None:
    """Refuse a zip that would inflate past the limits (a zip bomb)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise DocumentError("not a DOCX file (damaged, or encrypted)", "not_docx") from exc
    total = 0
    for info in archive.infolist():
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if total > MAX_UNZIPPED or (info.file_size > 1024 * 1024 and ratio > MAX_RATIO):
            raise DocumentError(
                f"refused: {info.filename} would inflate to {info.file_size} bytes "
                f"(ratio {ratio:.0f}); it looks like a zip bomb",
                "zip_bomb",
                name=info.filename,
                size=info.file_size,
                ratio=f"{ratio:.0f}",
            )


def parse_docx(data: bytes, name: str) -> ParsedDocument:
    check_zip(data)
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises KeyError, ValueError... on damaged parts
        raise DocumentError(
            f"not a readable DOCX file ({exc})", "bad_docx", error=str(exc)
        ) from exc
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    parts: list[str] = []
    title = str(document.core_properties.title or "").strip()

    def close() -> None:
        if parts:
            sections.append(
                Section(
                    tuple(t for _, t in path),
                    slug(path[-1][1]) if path else "",
                    None,
                    "\n\n".join(parts),
                )
            )
            parts.clear()

    for paragraph in document.paragraphs:
        text = " ".join(paragraph.text.split())
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        level = _heading_level(style)
        if level and text:
            close()
            path = [(lv, t) for lv, t in path if lv < level] + [(level, text)]
            title = title or text
        elif text:
            parts.append(text)
    for table in document.tables:
        for row in table.rows:
            cells = [" ".join(c.text.split()) for c in row.cells]
            line = " | ".join(dict.fromkeys(c for c in cells if c))
            if line:
                parts.append(line)
    close()
    return ParsedDocument(title or _stem(name), "docx", sections)


def _heading_level(style: str) -> int:
    if style == "Title":
        return 1
    match = re.fullmatch(r"Heading (\d)", style)
    return int(match.group(1)) if match else 0
