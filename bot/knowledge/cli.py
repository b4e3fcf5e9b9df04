"""``deskmate faq import|export`` and ``deskmate ask`` for the knowledge base.

``register(subparsers)`` adds the sub-commands to the main CLI's parser;
``run(args, settings, backend=None)`` executes one. ``python -m bot.knowledge``
runs them on their own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from bot.errors import DeskmateError
from bot.knowledge.base import KnowledgeBase, Policy
from bot.knowledge.export import EXPORT_FORMATS, export_entries
from bot.knowledge.importer import FORMATS, parse_mapping
from bot.settings import Settings
from llm.base import Backend
from storage.db import create_engine, upgrade
from storage.knowledge_repo import KnowledgeRepository


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    faq = subparsers.add_parser("faq", help="manage the FAQ knowledge base")
    faq_sub = faq.add_subparsers(dest="faq_command", required=True)
    imp = faq_sub.add_parser("import", help="import FAQ entries from CSV, JSON/JSONL or Markdown")
    imp.add_argument("file", type=Path)
    imp.add_argument("--tenant", default="", help="only this tenant sees the entries")
    imp.add_argument("--format", choices=FORMATS, help="override the format the extension implies")
    imp.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="read FIELD (question, answer, id, source, alternatives, tags, updated_at) "
        "from COLUMN",
    )
    exp = faq_sub.add_parser("export", help="write the FAQ to stdout or a file")
    exp.add_argument("--format", choices=EXPORT_FORMATS, default="csv")
    exp.add_argument("--tenant", default=None, help="only this tenant's entries ('' = global)")
    exp.add_argument("-o", "--output", type=Path, help="file to write (default stdout)")

    ask = subparsers.add_parser("ask", help="answer a question from the shell")
    ask.add_argument("question", help='the question, or "-" to read one question per stdin line')
    ask.add_argument("--tenant", default="")
    ask.add_argument("--json", action="store_true", help="print one JSON object per question")


def build_knowledge_base(
    settings: Settings, *, backend: Backend | None = None, engine: object = None
) -> KnowledgeBase:
    from llm.embeddings import shared_embedder

    engine = engine or create_engine(settings.effective_database_url)
    return KnowledgeBase(
        repository=KnowledgeRepository(engine),  # type: ignore[arg-type]
        embedder=shared_embedder(),
        backend=backend,
        policy=Policy(),
        llm_timeout=settings.llm_timeout,
    )


class _Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream = stream
        self.label = label
        self.tty = stream.isatty()
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        pct = 100 if not total else done * 100 // total
        if self.tty:
            bar = "#" * (pct // 4)
            self.stream.write(f"\r{self.label} [{bar:<25}] {done}/{total}")
            if done >= total:
                self.stream.write("\n")
        elif pct // 25 != self.last // 25 or done >= total:
            self.stream.write(f"{self.label}: {done}/{total}\n")
        self.last = pct
        self.stream.flush()


async def run(
    args: argparse.Namespace,
    settings: Settings,
    *,
    backend: Backend | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    engine = create_engine(settings.effective_database_url)
    try:
        await upgrade(engine)
        kb = build_knowledge_base(settings, backend=backend, engine=engine)
        if args.command == "faq" and args.faq_command == "import":
            report = await kb.import_file(
                args.file,
                tenant=args.tenant,
                fmt=args.format,
                mapping=parse_mapping(args.map),
                progress=_Progress(stderr, "embedding"),
            )
            for line in report.lines():
                print(line, file=stderr)
            print(report.lines()[0], file=stdout)
            return 0
        if args.command == "faq" and args.faq_command == "export":
            entries = await kb.repository.entries(tenant=args.tenant)
            text = export_entries(entries, args.format)
            if args.output:
                args.output.write_text(text, encoding="utf-8")
                print(f"wrote {len(entries)} entries to {args.output}", file=stderr)
            else:
                stdout.write(text)
            return 0
        if args.command == "ask":
            questions = (
                (line.strip() for line in stdin) if args.question == "-" else [args.question]
            )
            for question in questions:
                if not question:
                    continue
                answer = await kb.answer(question, tenant=args.tenant, conversation_key="cli")
                assert answer is not None  # support mode always answers
                if args.json:
                    print(json.dumps(answer.as_json(question), ensure_ascii=False), file=stdout)
                else:
                    print(answer.text, file=stdout)
                stdout.flush()
            return 0
        raise AssertionError(f"unhandled command {args}")
    except DeskmateError as exc:
        print(f"error: {exc.user_message if exc.user_message else exc}", file=stderr)
        return 1
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deskmate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return asyncio.run(run(args, Settings.from_env()))
