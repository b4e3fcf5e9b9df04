"""``deskmate faq import|export|tune|eval``: the knowledge base from the shell.

``register(subparsers)`` adds the ``faq`` command to the main CLI's parser;
``run(args, settings)`` executes it. ``deskmate ask`` goes through the
conversation manager (``bot.cli``) and reads the path and sources of each
answer back with ``answer_record``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from bot.app import create_knowledge_base, create_team
from bot.errors import CONFIG_ERRORS, FAILURES
from bot.knowledge.export import EXPORT_FORMATS, export_entries
from bot.knowledge.importer import FIELDS, FORMATS, parse_mapping
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.passages import FAQ, LOCATION_FIELDS
from bot.settings import Settings
from llm.embeddings import ADAPT_EPOCHS
from storage.db import Database

# A language code: "sv", "zh", "pt-br".
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8})?")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    faq = subparsers.add_parser("faq", help="manage the FAQ knowledge base")
    faq_sub = faq.add_subparsers(dest="faq_command", required=True, metavar="FAQ_COMMAND")
    imp = faq_sub.add_parser(
        "import",
        help="import FAQ entries from CSV/TSV, JSON/JSONL or Markdown",
        description="Rows with the same id (or, without ids, the same question) update the "
        "stored entry. Malformed rows are skipped and listed with their line numbers; a "
        "problem with the whole file stores nothing.",
    )
    imp.add_argument("file", type=str)
    imp.add_argument("--tenant", default="", help="only this tenant sees the entries")
    imp.add_argument("--format", choices=FORMATS, help="override the format the extension implies")
    imp.add_argument(
        "--language",
        default="",
        metavar="CODE",
        help="the file is this language's version (e.g. sv) of the entries already stored "
        "with the same ids: customers writing it are answered with it",
    )
    imp.add_argument(
        "--no-tune",
        action="store_true",
        help="do not adapt the embedding model to the entries after the import",
    )
    imp.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help=f"read FIELD ({', '.join(FIELDS)}) from COLUMN, e.g. --map question=Title",
    )
    tune = faq_sub.add_parser(
        "tune",
        help="adapt the embedding model to the knowledge base (minutes on a CPU)",
        description="Fine-tunes the sentence model on the deployment-wide entries' own "
        "questions and answers, so that retrieval learns the knowledge base's vocabulary, "
        "then re-embeds every entry with it. Run it again after large imports. Running "
        "bots switch over by themselves; each needs the model folder under its data dir.",
    )
    tune.add_argument("--epochs", type=int, default=ADAPT_EPOCHS, help="passes over the entries")
    tune.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    tune.add_argument("--reset", action="store_true", help="go back to the base model")
    ev = faq_sub.add_parser(
        "eval",
        help="measure the FAQ on your own labelled questions",
        description="FILE is a CSV of question, expected entry id (blank: a question the "
        "FAQ should not answer). Prints verbatim precision and coverage at each threshold, "
        "the thresholds recommended for DESKMATE_FAQ_PRECISION, and the misses. Nothing is "
        "stored.",
    )
    ev.add_argument("file", type=str)
    ev.add_argument("--tenant", default="", help="answer as this tenant's knowledge base")
    exp = faq_sub.add_parser("export", help="write the FAQ as CSV or JSONL")
    exp.add_argument("--format", choices=EXPORT_FORMATS, default="csv")
    exp.add_argument("--tenant", default=None, help="only this tenant's entries ('' = shared)")
    exp.add_argument("-o", "--output", help="file to write (default: stdout)")


class _Progress:
    """A progress bar on stderr; plain lines when stderr is not a terminal."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream = stream
        self.label = label
        self.tty = stream.isatty()
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        pct = 100 if not total else done * 100 // total
        if self.tty:
            self.stream.write(f"\r{self.label} [{'#' * (pct // 4):<25}] {done}/{total}")
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
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``faq import|export|tune|eval``; 0 on success, 1 with the reason on stderr."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    db = Database(settings.effective_database_url)
    try:
        await db.upgrade()
        kb = create_knowledge_base(db, settings)
        if args.faq_command == "import":
            language = args.language.strip().lower()
            if language and not _LANGUAGE.fullmatch(language):
                print(
                    f"deskmate: --language takes a language code such as sv or pt-br, "
                    f"not {args.language!r}",
                    file=stderr,
                )
                return 1
            report = await kb.import_file(
                Path(args.file),
                tenant=args.tenant,
                fmt=args.format,
                mapping=parse_mapping(args.map),
                progress=_Progress(stderr, "embedding"),
                language=language,
            )
            for line in report.lines()[1:]:
                print(line, file=stderr)
            print(report.lines()[0], file=stdout)
            if report.created or report.updated:
                await create_team(db, settings).repository.audit(
                    args.tenant,
                    "cli",
                    "faq.import",
                    Path(args.file).name,
                    {"added": report.created, "updated": report.updated},
                )
                print(await _after_import(kb, report.language, args.no_tune, stderr), file=stderr)
            return 0
        if args.faq_command == "eval":
            return await _eval(kb, Path(args.file), args.tenant, settings, stdout, stderr)
        if args.faq_command == "tune":
            from bot.knowledge import tuning

            if args.reset:
                outcome = await tuning.reset(kb)
            else:
                outcome = await tuning.tune(
                    kb, epochs=args.epochs, seed=args.seed, progress=_Progress(stderr, "adapting")
                )
            print(outcome.line(), file=stdout)
            return 0
        entries = await kb.repository.entries(tenant=args.tenant)
        text = export_entries(entries, args.format)
        if args.output:
            try:
                await asyncio.to_thread(Path(args.output).write_text, text, encoding="utf-8")
            except OSError as exc:
                print(f"deskmate: cannot write {args.output}: {exc.strerror}", file=stderr)
                return 1
            print(f"wrote {len(entries)} entries to {args.output}", file=stderr)
        else:
            stdout.write(text)
        return 0
    except CONFIG_ERRORS as exc:
        # The operator is the one reading: the message says what to fix.
        print(f"deskmate: {exc}", file=stderr)
        return 1
    except FAILURES as exc:
        print(f"deskmate: {getattr(exc, 'user_message', '') or exc}", file=stderr)
        return 1
    finally:
        await db.dispose()


async def _adapt(kb: KnowledgeBase, stderr: TextIO) -> str:
    """Adapt the embedding model to the entries as they are now (minutes on a CPU)."""
    from bot.errors import ConfigError
    from bot.knowledge import tuning

    print("adapting the embedding model to the entries (--no-tune skips this)", file=stderr)
    try:
        outcome = await tuning.tune(kb, progress=_Progress(stderr, "adapting"))
    except ConfigError as exc:
        return f"the embedding model was not adapted: {exc}"
    return outcome.line()


async def _after_import(kb: KnowledgeBase, language: str, no_tune: bool, stderr: TextIO) -> str:
    """Adapt the embedding model after an import, unless told not to or the FAQ is
    written in another language than English: only English questions about English
    entries use the English model, and the multilingual one answers this FAQ."""
    if no_tune:
        return await _tune_hint(kb)
    if kb.crosslingual is not None and language not in ("", "en"):
        return (
            f"the embedding model was not adapted: the FAQ is written in {language}, "
            "which the multilingual model answers (`deskmate faq tune` adapts the English "
            "model all the same)"
        )
    return await _adapt(kb, stderr)


async def _tune_hint(kb: KnowledgeBase) -> str:
    from storage.knowledge_repo import DEPLOYMENT, EMBEDDING_MODEL_SETTING

    if await kb.repository.get_setting(DEPLOYMENT, EMBEDDING_MODEL_SETTING):
        return (
            "the embedding model was adapted to the entries as they were before this import; "
            "run `deskmate faq tune` again to include the new ones"
        )
    return "tip: `deskmate faq tune` adapts the embedding model to these entries (better matches)"


async def answer_record(kb: KnowledgeBase, conversation_key: str) -> dict[str, Any] | None:
    """The knowledge base's log of the latest answer in a conversation, if any."""
    rows = await kb.repository.answers(conversation_key=conversation_key, limit=1)
    return rows[0] if rows else None


def answer_json(logged: dict[str, Any]) -> dict[str, Any]:
    """``path`` and ``sources`` of a logged answer (and ``options`` for a clarification).

    Every source has ``id``, ``kind`` (``faq``, ``document``...), ``title``
    and ``score``, plus the location fields that are set (``section``,
    ``anchor``, ``page``, ``url``); an FAQ source also has its ``question``.
    An option is ``id`` and ``question`` for an FAQ entry, ``id`` and
    ``title`` otherwise.
    """
    sources = [source_json(e) for e in logged["entries"]]
    out: dict[str, Any] = {"path": logged["path"], "sources": sources}
    if logged["path"] == "clarify":
        out["options"] = [
            {"id": s["id"], "question": s["question"]}
            if "question" in s
            else {"id": s["id"], "title": s["title"]}
            for s in sources
        ]
    return out


def source_json(logged: dict[str, Any]) -> dict[str, Any]:
    """One logged passage (``Passage.logged``) as ``ask --json`` shows it."""
    kind = str(logged.get("kind", FAQ))
    if kind == FAQ:
        question = logged.get("question", "")
        out = {"id": logged["ref"], "kind": kind, "title": question, "score": logged["score"]}
        return {**out, "question": question}
    out = {
        "id": logged.get("passage", logged["ref"]),
        "kind": kind,
        "document": logged.get("document", ""),
        "title": logged.get("title", ""),
        "score": logged["score"],
    }
    # Every location field, null when the passage has none (a PDF page has no anchor).
    out.update((name, logged.get(name) or None) for name in LOCATION_FIELDS)
    return out


def read_labelled(path: Path) -> list[tuple[str, str, str]]:
    """(question, expected entry id or "", language or "") rows of an evaluation CSV.

    Columns: question, expected id; a header row (its first cell ``question``) is
    skipped, and names a ``language`` column when the file has one.
    """
    import csv

    rows: list[tuple[str, str, str]] = []
    language_at: int | None = None
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for n, row in enumerate(csv.reader(handle)):
            if not row or not row[0].strip():
                continue
            if n == 0 and row[0].strip().lower() == "question":
                names = [cell.strip().lower() for cell in row]
                language_at = names.index("language") if "language" in names else None
                continue
            expected = row[1].strip() if len(row) > 1 else ""
            language = ""
            if language_at is not None and len(row) > language_at:
                language = row[language_at].strip().lower()
            rows.append((row[0].strip(), expected, language))
    return rows


def _per_language(
    scored: list[Any], languages: list[str], kb: KnowledgeBase, stdout: TextIO
) -> None:
    """The figures again for each language of the file's ``language`` column."""
    from bot.knowledge import evaluation

    policy = kb.policy
    print("per language, at the thresholds in force:", file=stdout)
    for language in sorted(set(languages)):
        mine = [s for s, lang in zip(scored, languages, strict=True) if lang == language]
        o = evaluation.outcomes(
            mine,
            verbatim=policy.verbatim_score,
            margin=policy.verbatim_margin,
            grounded=policy.grounded_score,
        )
        print(
            f"  {language or '(none)'}: {len(mine)} questions ({o['in_scope']} in scope, "
            f"{o['off_topic']} off-topic); right entry first {o['top1']:.1%}, among the first "
            f"three {o['top3']:.1%}; right entry verbatim or offered {o['covered']:.1%}; "
            f"{o['verbatim']} verbatim answers, {o['verbatim_wrong']:.1%} wrong; off-topic "
            f"escalated {o['oos_escalated']:.1%}",
            file=stdout,
        )


async def _eval(
    kb: KnowledgeBase,
    path: Path,
    tenant: str,
    settings: Settings,
    stdout: TextIO,
    stderr: TextIO,
) -> int:
    from bot.knowledge import evaluation

    try:
        rows = await asyncio.to_thread(read_labelled, path)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"deskmate: cannot read {path}: {exc}", file=stderr)
        return 1
    if not rows:
        print(f"deskmate: {path} has no questions", file=stderr)
        return 1
    scored = await evaluation.score_questions(
        kb, [(q, frozenset({e}) if e else frozenset()) for q, e, _ in rows], tenant=tenant
    )
    margin = kb.policy.verbatim_margin
    curve = evaluation.verbatim_curve(scored, margin=margin)
    target = settings.faq_precision
    in_scope = sum(s.in_scope for s in scored)
    print(
        f"{len(scored)} questions ({in_scope} in scope, {len(scored) - in_scope} off-topic); "
        f"right entry first: {sum(s.right for s in scored)}/{in_scope}, among the first "
        f"three: {sum(s.offered(3) for s in scored if s.in_scope)}/{in_scope}",
        file=stdout,
    )
    print("threshold  verbatim  precision  coverage  off-topic escalated", file=stdout)
    for point in curve:
        print(
            f"{point.threshold:9.2f}  {point.answered:8d}  {point.precision:9.1%}  "
            f"{point.coverage:8.1%}  {point.oos_escalated:19.1%}",
            file=stdout,
        )
    verbatim = evaluation.recommend_verbatim(curve, target)
    escalate = evaluation.recommend_escalation(scored)
    now = kb.policy.verbatim_score
    print(
        f"recommended for precision {target:.0%}: DESKMATE_FAQ_VERBATIM_SCORE="
        + (f"{verbatim:.2f}" if verbatim is not None else "(none reaches it)")
        + (
            f", DESKMATE_FAQ_GROUNDED_SCORE={escalate:.2f}"
            if escalate is not None
            else " (no off-topic questions to place the escalation threshold)"
        )
        + f"; now {now:.2f} and {kb.policy.grounded_score:.2f}",
        file=stdout,
    )
    off = [s for s in scored if not s.in_scope]
    if escalate is not None:
        refused = sum(s.scope < escalate for s in off)
        # A threshold placed among n samples refuses, on average, refused / (n + 1)
        # of the questions that were not among them.
        print(
            f"that escalation threshold refuses {refused} of these {len(off)} off-topic "
            f"questions; expect about {refused / (len(off) + 1):.0%} of new ones (more "
            "off-topic questions in the file make the estimate closer)",
            file=stdout,
        )
    languages = [language for _, _, language in rows]
    if any(languages):
        _per_language(scored, languages, kb, stdout)
    misses = [s for s in scored if s.in_scope and not s.right]
    wrongly = [s for s in scored if not s.in_scope and s.scope >= kb.policy.grounded_score]
    for s in misses:
        print(f"miss: {s.question!r} expected {sorted(s.expected)} got {s.refs[:3]}", file=stdout)
    for s in wrongly:
        print(
            f"off-topic not escalated: {s.question!r} -> {s.refs[:1]} (scope {s.scope:.2f})",
            file=stdout,
        )
    return 0
