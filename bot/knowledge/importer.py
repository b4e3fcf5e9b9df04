"""Reading FAQ files: CSV/TSV, JSON, JSONL and Markdown (Q/A headings).

Parsing is pure: it returns the rows it could read and, for every row it
skipped, the line number and why. Only problems with the whole file (missing,
undecodable, no question or answer column, broken JSON structure) raise
``KnowledgeImportError``; the caller then stores nothing.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.errors import DeskmateError
from storage.knowledge_repo import EntryInput

MAX_QUESTION_CHARS = 1_000
MAX_ANSWER_CHARS = 8_000
MAX_ALTERNATIVES = 20
MAX_ID_CHARS = 200

FIELDS = ("question", "answer", "id", "source", "alternatives", "tags", "updated_at")
# Column names recognised without --map (compared lower-cased, "_"/"-"/" " ignored).
_ALIASES: dict[str, tuple[str, ...]] = {
    "question": ("question", "q", "questions", "title", "query", "prompt"),
    "answer": ("answer", "a", "answers", "response", "reply", "body"),
    "id": ("id", "externalid", "key", "faqid", "uid"),
    "source": ("source", "sources", "url", "link", "reference", "references"),
    "alternatives": (
        "alternatives",
        "alternative",
        "alternativequestions",
        "alt",
        "alts",
        "paraphrases",
        "variants",
        "phrasings",
    ),
    "tags": ("tags", "tag", "category", "categories", "topic", "topics"),
    "updated_at": ("updatedat", "updated", "lastmodified", "modified", "date"),
}
FORMATS = ("csv", "tsv", "json", "jsonl", "markdown")


class KnowledgeImportError(DeskmateError):
    """The file as a whole cannot be imported; nothing was stored. ``reason``
    and ``values`` name the problem for a page that says it in its reader's
    language (the console); the message is the English the CLI prints."""

    def __init__(self, message: str, reason: str = "", **values: object) -> None:
        super().__init__(message)
        self.user_message = message
        self.reason = reason
        self.values = values


class RowProblem(ValueError):
    """Why one row is skipped: the English message, and its ``reason`` code
    with the ``values`` it names."""

    def __init__(self, message: str, reason: str, **values: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.values = values


@dataclass(frozen=True, slots=True)
class ParsedRow:
    line: int
    entry: EntryInput


@dataclass(frozen=True, slots=True)
class RowIssue:
    """A skipped row: its line, why in English (``reason``), and the same as
    a code with its values (``code``, ``values``) for other languages."""

    line: int
    reason: str
    code: str = ""
    values: Mapping[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(slots=True)
class ParseResult:
    rows: list[ParsedRow] = field(default_factory=list)
    issues: list[RowIssue] = field(default_factory=list)


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """``["question=Title", "answer=Body"]`` -> ``{"question": "Title", ...}``."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        name, sep, column = pair.partition("=")
        name = name.strip().lower()
        if not sep or not column.strip():
            raise KnowledgeImportError(f"--map {pair!r}: write FIELD=COLUMN, e.g. question=Title")
        if name not in FIELDS:
            raise KnowledgeImportError(
                f"--map {pair!r}: unknown field {name!r}; fields are {', '.join(FIELDS)}"
            )
        mapping[name] = column.strip()
    return mapping


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    return {
        ".csv": "csv",
        ".tsv": "tsv",
        ".json": "json",
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
        ".md": "markdown",
        ".markdown": "markdown",
    }.get(suffix, "")


def parse_file(
    path: Path, *, fmt: str | None = None, mapping: Mapping[str, str] | None = None
) -> ParseResult:
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise KnowledgeImportError(
            f"cannot tell the format of {path.name}: use a .csv, .tsv, .json, .jsonl or .md "
            "file, or pass --format",
            "format",
            name=path.name,
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KnowledgeImportError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise KnowledgeImportError(
            f"{path.name} is not UTF-8 text (byte {exc.start}); save it as UTF-8 and retry",
            "not_utf8",
            name=path.name,
            byte=exc.start,
        ) from None
    return parse_text(content, fmt=fmt, mapping=mapping)


def parse_text(content: str, *, fmt: str, mapping: Mapping[str, str] | None = None) -> ParseResult:
    mapping = dict(mapping or {})
    if fmt in ("csv", "tsv"):
        result = _parse_csv(content, "\t" if fmt == "tsv" else None, mapping)
    elif fmt == "json":
        result = _parse_json(content, mapping)
    elif fmt == "jsonl":
        result = _parse_jsonl(content, mapping)
    elif fmt == "markdown":
        result = _parse_markdown(content)
    else:
        raise KnowledgeImportError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    _drop_duplicates(result)
    return result


# -- field handling ---------------------------------------------------------------


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


def _resolve_columns(columns: Iterable[str], mapping: Mapping[str, str]) -> dict[str, str]:
    """Field -> column name present in the data (for the fields that are present)."""
    columns = [c for c in columns if isinstance(c, str)]
    by_norm = {_norm(c): c for c in columns}
    resolved: dict[str, str] = {}
    for name, column in mapping.items():
        if column in columns:
            resolved[name] = column
        elif _norm(column) in by_norm:
            resolved[name] = by_norm[_norm(column)]
        else:
            raise KnowledgeImportError(
                f"--map {name}={column}: there is no column {column!r} "
                f"(columns: {', '.join(columns) or 'none'})"
            )
    for name, aliases in _ALIASES.items():
        if name in resolved:
            continue
        for alias in aliases:
            if alias in by_norm and by_norm[alias] not in resolved.values():
                resolved[name] = by_norm[alias]
                break
    return resolved


def _require_columns(resolved: Mapping[str, str], columns: Iterable[str]) -> None:
    missing = [f for f in ("question", "answer") if f not in resolved]
    if missing:
        named = ", ".join(columns)
        raise KnowledgeImportError(
            f"no {' or '.join(missing)} column found (columns: {named or 'none'}); "
            f"name them question/answer or map them, e.g. --map {missing[0]}=YourColumn",
            "no_" + "_".join(missing),
            columns=named or "-",
        )


def _as_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(str(v).strip() for v in value if str(v).strip())
    text = str(value).strip()
    if not text:
        return ()
    if text.startswith("["):
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        if isinstance(decoded, list):
            return _as_list(decoded)
    sep = "|" if "|" in text else ";" if ";" in text else None
    parts = text.split(sep) if sep else [text]
    return tuple(p.strip() for p in parts if p.strip())


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "; ".join(str(v).strip() for v in value if str(v).strip())
    if isinstance(value, dict):
        raise ValueError("is an object, expected text")
    return str(value).strip()


def _build(record: Mapping[str, Any], resolved: Mapping[str, str]) -> EntryInput:
    """Make an entry from one record; ``ValueError`` says why the row is skipped."""

    def get(name: str) -> Any:
        column = resolved.get(name)
        return record.get(column) if column is not None else None

    question = _as_text(get("question"))
    answer = _as_text(get("answer"))
    if not question:
        raise RowProblem("the question is empty", "no_question")
    if not answer:
        raise RowProblem("the answer is empty", "no_answer")
    if len(question) > MAX_QUESTION_CHARS:
        raise RowProblem(
            f"the question is {len(question)} characters; the limit is {MAX_QUESTION_CHARS}",
            "long_question",
            length=len(question),
            limit=MAX_QUESTION_CHARS,
        )
    if len(answer) > MAX_ANSWER_CHARS:
        raise RowProblem(
            f"the answer is {len(answer)} characters; the limit is {MAX_ANSWER_CHARS} "
            "(split it into several entries)",
            "long_answer",
            length=len(answer),
            limit=MAX_ANSWER_CHARS,
        )
    alternatives = tuple(a for a in _as_list(get("alternatives")) if a != question)
    if len(alternatives) > MAX_ALTERNATIVES:
        raise RowProblem(
            f"{len(alternatives)} alternative phrasings; the limit is {MAX_ALTERNATIVES}",
            "many_alternatives",
            count=len(alternatives),
            limit=MAX_ALTERNATIVES,
        )
    for alt in alternatives:
        if len(alt) > MAX_QUESTION_CHARS:
            raise RowProblem(
                f"an alternative phrasing is over {MAX_QUESTION_CHARS} characters",
                "long_alternative",
                limit=MAX_QUESTION_CHARS,
            )
    external_id = _as_text(get("id")) or None
    if external_id and len(external_id) > MAX_ID_CHARS:
        raise RowProblem(f"the id is over {MAX_ID_CHARS} characters", "long_id", limit=MAX_ID_CHARS)
    updated_at = None
    raw_date = _as_text(get("updated_at"))
    if raw_date:
        try:
            updated_at = datetime.fromisoformat(raw_date.replace("Z", "+00:00"))
        except ValueError:
            raise RowProblem(
                f"updated_at {raw_date!r} is not an ISO date", "bad_date", date=raw_date
            ) from None
        if updated_at.tzinfo is None:
            from datetime import UTC

            updated_at = updated_at.replace(tzinfo=UTC)
    return EntryInput(
        question=question,
        answer=answer,
        alternatives=alternatives,
        tags=_as_list(get("tags")),
        source=_as_text(get("source")),
        external_id=external_id,
        updated_at=updated_at,
    )


def _add(result: ParseResult, line: int, record: Any, resolved: Mapping[str, str]) -> None:
    if not isinstance(record, dict):
        found = type(record).__name__
        result.issues.append(
            RowIssue(line, f"expected an object, found {found}", "not_object", {"found": found})
        )
        return
    try:
        result.rows.append(ParsedRow(line, _build(record, resolved)))
    except RowProblem as exc:
        result.issues.append(RowIssue(line, str(exc), exc.reason, exc.values))
    except ValueError as exc:
        result.issues.append(RowIssue(line, str(exc)))


def _drop_duplicates(result: ParseResult) -> None:
    """Two rows with one key: the later wins (as a re-import would), the earlier is reported."""
    last: dict[str, int] = {}
    for index, row in enumerate(result.rows):
        last[row.entry.key] = index
    kept: list[ParsedRow] = []
    for index, row in enumerate(result.rows):
        winner = last[row.entry.key]
        if winner != index:
            result.issues.append(
                RowIssue(
                    row.line,
                    f"same id/question as line {result.rows[winner].line}, which replaces it",
                    "replaced",
                    {"by": result.rows[winner].line},
                )
            )
        else:
            kept.append(row)
    result.rows = kept
    result.issues.sort(key=lambda i: i.line)


# -- formats ------------------------------------------------------------------------


def _parse_csv(content: str, delimiter: str | None, mapping: Mapping[str, str]) -> ParseResult:
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(content[:4096], delimiters=",;\t").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise KnowledgeImportError("the file is empty", "empty") from None
    except csv.Error as exc:
        raise KnowledgeImportError(
            f"line 1: unreadable header: {exc}", "bad_header", error=str(exc)
        ) from None
    header = [h.strip() for h in header]
    resolved = _resolve_columns(header, mapping)
    _require_columns(resolved, header)
    result = ParseResult()
    line = reader.line_num + 1
    while True:
        start = line
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.issues.append(
                RowIssue(start, f"unreadable CSV: {exc}", "bad_csv", {"error": str(exc)})
            )
            line = reader.line_num + 1
            continue
        line = reader.line_num + 1
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            result.issues.append(
                RowIssue(
                    start,
                    f"{len(values)} fields, the header has {len(header)}",
                    "field_count",
                    {"count": len(values), "header": len(header)},
                )
            )
            continue
        _add(result, start, dict(zip(header, values, strict=True)), resolved)
    return result


def _parse_json(content: str, mapping: Mapping[str, str]) -> ParseResult:
    decoder = json.JSONDecoder()
    text = content.strip()
    offset = len(content) - len(content.lstrip())
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise KnowledgeImportError(f"not valid JSON: {exc}", "bad_json", error=str(exc)) from None
    items: list[Any]
    if isinstance(document, list):
        items = document
    elif isinstance(document, dict):
        lists = [k for k, v in document.items() if isinstance(v, list)]
        if not lists:
            raise KnowledgeImportError(
                "the JSON object holds no list of entries; expected [{...}, ...] or "
                '{"entries": [...]}',
                "no_list",
            )
        key = next((k for k in ("entries", "faq", "faqs", "items", "data") if k in lists), lists[0])
        items = document[key]
    else:
        raise KnowledgeImportError("expected a JSON list of entries", "not_list")
    lines = _item_lines(text, decoder, len(items))
    columns: dict[str, None] = {}
    for item in items:
        if isinstance(item, dict):
            columns.update(dict.fromkeys(item))
    resolved = _resolve_columns(columns, mapping)
    _require_columns(resolved, columns)
    result = ParseResult()
    base = content[:offset].count("\n")
    for index, item in enumerate(items):
        _add(result, base + lines[index] if index < len(lines) else index + 1, item, resolved)
    return result


def _item_lines(text: str, decoder: json.JSONDecoder, count: int) -> list[int]:
    """Line on which each element of the (first) list in ``text`` starts."""
    start = text.find("[")
    lines: list[int] = []
    if start < 0:
        return lines
    pos = start + 1
    while len(lines) < count:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            break
        lines.append(text.count("\n", 0, pos) + 1)
        try:
            _, pos = decoder.raw_decode(text, pos)
        except ValueError:
            break
    return lines


def _parse_jsonl(content: str, mapping: Mapping[str, str]) -> ParseResult:
    decoded: list[tuple[int, Any]] = []
    result = ParseResult()
    for number, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            decoded.append((number, json.loads(raw)))
        except ValueError as exc:
            error = str(exc.args[0])
            result.issues.append(
                RowIssue(number, f"not valid JSON: {error}", "bad_json_line", {"error": error})
            )
    columns: dict[str, None] = {}
    for _, item in decoded:
        if isinstance(item, dict):
            columns.update(dict.fromkeys(item))
    if not decoded:
        if result.issues:
            first = result.issues[0]
            raise KnowledgeImportError(
                f"no line of the file is valid JSON (first problem: {first})",
                "no_json_line",
                line=first.line,
                error=first.values.get("error", ""),
            )
        raise KnowledgeImportError("the file is empty", "empty")
    resolved = _resolve_columns(columns, mapping)
    _require_columns(resolved, columns)
    for number, item in decoded:
        _add(result, number, item, resolved)
    return result


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SOURCE_LINE = re.compile(r"^\s*(?:source|sources|url|link)\s*:\s*(.+)$", re.IGNORECASE)
_ID_LINE = re.compile(r"^\s*id\s*:\s*(\S+)\s*$", re.IGNORECASE)
_TAGS_LINE = re.compile(r"^\s*tags?\s*:\s*(.+)$", re.IGNORECASE)


def _parse_markdown(content: str) -> ParseResult:
    """Each heading is a question and the text under it its answer. A heading
    with no text of its own followed by deeper headings is a section: its title
    becomes a tag of the entries inside. ``Source:``, ``Id:`` and ``Tags:``
    lines in an answer set those fields."""
    result = ParseResult()
    blocks: list[tuple[int, int, str, list[str]]] = []  # (line, level, heading, body)
    in_fence = False
    for number, raw in enumerate(content.splitlines(), start=1):
        if raw.lstrip().startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(raw)
        if match:
            blocks.append((number, len(match.group(1)), match.group(2).strip(), []))
        elif blocks:
            blocks[-1][3].append(raw)
    if not blocks:
        raise KnowledgeImportError(
            "no headings found; write each question as a '## ' heading", "no_headings"
        )
    sections: list[tuple[int, str]] = []
    for index, (line, level, heading, body) in enumerate(blocks):
        sections = [(lvl, title) for lvl, title in sections if lvl < level]
        text = "\n".join(body).strip()
        deeper_next = index + 1 < len(blocks) and blocks[index + 1][1] > level
        if not text and deeper_next:
            sections.append((level, heading))
            continue
        record: dict[str, Any] = {"question": heading.removeprefix("Q:").strip()}
        answer_lines: list[str] = []
        tags = [title for _, title in sections]
        for body_line in text.splitlines():
            if m := _SOURCE_LINE.match(body_line):
                record["source"] = m.group(1).strip()
            elif m := _ID_LINE.match(body_line):
                record["id"] = m.group(1)
            elif m := _TAGS_LINE.match(body_line):
                tags.extend(_as_list(m.group(1).replace(",", ";")))
            else:
                answer_lines.append(body_line)
        answer = "\n".join(answer_lines).strip()
        record["answer"] = re.sub(r"^A:\s*", "", answer)
        record["tags"] = tags
        fields = {name: name for name in ("question", "answer", "source", "id", "tags")}
        _add(result, line, record, fields)
    return result
