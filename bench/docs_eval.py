"""Answers from a real manual, measured the way an operator would use them.

The manual is the Debian GNU/Linux FAQ (``bench/data/manual``, see SOURCE.md
there), shipped both as HTML pages and as one PDF. For each form: a fresh data
folder, ``deskmate docs add`` of the pages (or of the PDF), then every question
of ``questions.tsv`` through ``deskmate ask - --json`` with the default
settings. Per half it counts:

- the first source is the right section (HTML: the page and the heading's
  anchor) or a page inside the right section (PDF);
- a right source is among the sources;
- the answer contains text from the right section (eight words in a row, or
  the whole section when it is shorter);
- off-topic questions escalated (and, beside it, questions about the manual
  that were escalated).

``--with-faq`` measures the FAQ beside the manual instead: the evaluation FAQ
of ``bench/faq_ask.py`` is imported into two fresh folders, the manual's HTML
pages are added to the second, and both halves of the FAQ's questions go
through ``deskmate ask`` in each, so the two rows compare the FAQ's figures
alone and with the manual loaded.

    python bench/docs_eval.py                    # HTML and PDF, both halves
    python bench/docs_eval.py --only pdf --json answers.json
    DESKMATE_DOCS_ANSWERS=model python bench/docs_eval.py --only html --half heldout
    python bench/docs_eval.py --with-faq         # FAQ figures, alone and beside the manual
    python bench/docs_eval.py --baseline         # the bare embedding model over whole sections

``--baseline`` is the yardstick for the question set: the embedding model
alone, each HTML section (heading and text, up to 2,000 characters) one
vector, no keywords, no chunking; top-1 and top-3 sections per half.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bot.messages import say  # noqa: E402

MANUAL = ROOT / "bench" / "data" / "manual"
HTML_DIR = MANUAL / "html"
PDF_FILE = MANUAL / "pdf" / "debian-faq.en.pdf"
HALVES = ("tune", "heldout")
RUN_WORDS = 8  # a run of this many words of the answer, found in the section, is "its text"

_HEADING = re.compile(r'<h[1-6][^>]*>\s*<a id="([^"]+)"></a>', re.S)
_TAG = re.compile(r"<[^>]+>")
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    split: str
    kind: str  # manual | offtopic-general | offtopic-near
    text: str
    page: str
    anchors: tuple[str, ...]  # the section's anchor first, then the others that answer it
    pages: tuple[tuple[int, int], ...]  # PDF page ranges (first, last), 1-based

    @property
    def on_topic(self) -> bool:
        return self.kind == "manual"


def load_questions(path: Path = MANUAL / "questions.tsv") -> list[Question]:
    out = []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            anchors = tuple(a for a in [row["anchor"], *row["also"].split("|")] if a)
            pages = tuple(
                (int(first), int(last))
                for first, last in (r.split("-") for r in row["pdf_pages"].split(",") if r)
            )
            out.append(
                Question(
                    row["id"],
                    row["split"],
                    row["kind"],
                    row["question"],
                    row["page"],
                    anchors,
                    pages,
                )
            )
    return out


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def section_texts(folder: Path = HTML_DIR) -> dict[str, str]:
    """Each heading's own text (up to the next heading), by anchor, from the HTML pages."""
    texts: dict[str, str] = {}
    for page in sorted(folder.glob("*.html")):
        parts = _HEADING.split(page.read_text(encoding="utf-8"))
        for anchor, body in zip(parts[1::2], parts[2::2], strict=True):
            texts[anchor] = html.unescape(_TAG.sub(" ", body))
    return texts


def contains_section_text(answer: str, sections: Iterable[str]) -> bool:
    """Whether ``answer`` quotes a run of ``RUN_WORDS`` words (or a whole
    shorter section) from one of ``sections``."""
    said = words(answer)
    for section in sections:
        source = words(section)
        n = min(RUN_WORDS, len(source))
        if n == 0 or len(said) < n:
            continue
        runs = {tuple(source[i : i + n]) for i in range(len(source) - n + 1)}
        if any(tuple(said[i : i + n]) in runs for i in range(len(said) - n + 1)):
            return True
    return False


def _document_name(source: dict[str, object]) -> str:
    named = str(source.get("document") or source.get("url") or "")
    return Path(named.split("#", 1)[0].split("?", 1)[0]).name


def right_source(source: dict[str, object], question: Question, form: str) -> bool:
    """Whether one ``ask --json`` source points at the question's section."""
    if source.get("kind") != "document":
        return False
    if form == "pdf":
        page = source.get("page")
        return isinstance(page, int) and any(a <= page <= b for a, b in question.pages)
    return _document_name(source) == question.page and source.get("anchor") in question.anchors


@dataclass(slots=True)
class Outcome:
    on_topic: int = 0
    off_topic: int = 0
    first_right: int = 0
    among_right: int = 0
    quoted: int = 0
    on_topic_escalated: int = 0
    off_topic_escalated: int = 0

    def row(self) -> dict[str, float]:
        on, off = self.on_topic or 1, self.off_topic or 1
        return {
            "first": self.first_right / on,
            "among": self.among_right / on,
            "quoted": self.quoted / on,
            "off_escalated": self.off_topic_escalated / off,
            "on_escalated": self.on_topic_escalated / on,
        }


def score(
    answers: Sequence[dict[str, object]],
    questions: Sequence[Question],
    form: str,
    texts: dict[str, str],
) -> Outcome:
    result = Outcome()
    for answer, question in zip(answers, questions, strict=True):
        escalated = answer.get("path") == "escalated"
        if not question.on_topic:
            result.off_topic += 1
            result.off_topic_escalated += escalated
            continue
        result.on_topic += 1
        result.on_topic_escalated += escalated
        sources = [s for s in answer.get("sources") or [] if isinstance(s, dict)]  # type: ignore[attr-defined]
        hits = [right_source(s, question, form) for s in sources]
        result.first_right += bool(hits) and hits[0]
        result.among_right += any(hits)
        sections = [texts.get(a, "") for a in question.anchors]
        # The sections named under "See also" are places, not the answer's text.
        said = str(answer.get("answer", "")).split(f"\n{say('knowledge.doc.see_also')}\n")[0]
        result.quoted += contains_section_text(said, sections)
    return result


# -- driving the CLI ----------------------------------------------------------------------


def fresh_env(prefix: str) -> tuple[Path, dict[str, str]]:
    """A new data folder (the converted local model reused) and the environment for it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    models = ROOT / "data" / "models"
    if models.is_dir():
        (folder / "models").symlink_to(models)
    env = {**os.environ, "DESKMATE_DATA_DIR": str(folder), "LOG_LEVEL": "WARNING"}
    env.pop("DESKMATE_DATABASE_URL", None)
    env.pop("DATABASE_URL", None)
    return folder, env


def ask_all(questions: Sequence[str], env: dict[str, str]) -> list[dict[str, object]]:
    from faq_ask import deskmate

    out = deskmate(["ask", "-", "--json"], env, stdin="\n".join(questions) + "\n")
    answers = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if len(answers) != len(questions):
        raise SystemExit(f"{len(questions)} questions asked, {len(answers)} answers")
    return answers


def add_documents(paths: Sequence[Path], env: dict[str, str]) -> float:
    from faq_ask import deskmate

    started = time.perf_counter()
    deskmate(["docs", "add", *map(str, paths)], env)
    return time.perf_counter() - started


@dataclass(slots=True)
class HalfRun:
    form: str
    half: str
    outcome: Outcome
    seconds: float
    answers: list[dict[str, object]]
    asked: list[Question]


def run_manual(
    form: str, questions: Sequence[Question], texts: dict[str, str], halves: Sequence[str] = HALVES
) -> list[HalfRun]:
    folder, env = fresh_env(f"docs-eval-{form}-")
    seconds = add_documents([HTML_DIR] if form == "html" else [PDF_FILE], env)
    print(f"{form}: docs add in {seconds:.0f} s (data folder {folder})", flush=True)
    rows: list[HalfRun] = []
    for half in halves:
        asked = [q for q in questions if q.split == half]
        started = time.perf_counter()
        answers = ask_all([q.text for q in asked], env)
        took = time.perf_counter() - started
        rows.append(HalfRun(form, half, score(answers, asked, form, texts), took, answers, asked))
        print(f"{form} {half}: {len(asked)} questions in {took:.0f} s", flush=True)
    return rows


def print_manual(rows: Sequence[HalfRun]) -> None:
    print(
        "\n| form | half | about the manual / off-topic | first source right "
        "| right among sources | answer quotes the section | off-topic escalated "
        "| manual questions escalated |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for run in rows:
        o, r = run.outcome, run.outcome.row()
        print(
            f"| {run.form.upper()} | {run.half} | {o.on_topic} / {o.off_topic} | {r['first']:.1%} "
            f"| {r['among']:.1%} | {r['quoted']:.1%} | {r['off_escalated']:.1%} "
            f"| {o.on_topic_escalated} |"
        )


def run_with_faq(no_tune: bool) -> None:
    from faq_ask import DATA, deskmate, ev, outcome

    rows: list[tuple[bool, str, dict[str, float]]] = []
    for beside in (False, True):
        folder, env = fresh_env("docs-eval-faq-")
        deskmate(
            ["faq", "import", str(ev.faq_jsonl(DATA)), *(["--no-tune"] if no_tune else [])], env
        )
        if beside:
            add_documents([HTML_DIR], env)
        for half in ev.HALVES:
            labelled = ev.labelled(ev.load_half(DATA, half))
            answers = ask_all([q for q, _ in labelled], env)
            rows.append((beside, half, outcome(answers, [e for _, e in labelled])))
            for (question, expected), answer in zip(labelled, answers, strict=True):
                sources = answer.get("sources")
                first = sources[0] if isinstance(sources, list) and sources else {}
                if not expected and answer.get("path") != "escalated":
                    # An FAQ off-topic question the manual answered: which section took it.
                    print(f"  {half}: {question!r} -> {first.get('kind')} {first.get('section')!r}")
        print(f"FAQ{' and manual' if beside else ' alone'}: folder {folder}", flush=True)
    print(
        "\n| loaded | half | right entry verbatim or offered | verbatim answers (wrong) "
        "| clarified | off-topic escalated | other paths |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for beside, half, o in rows:
        print(
            f"| {'FAQ + manual (HTML)' if beside else 'FAQ alone'} | {half} | {o['covered']:.1%} "
            f"| {o['verbatim']} ({o['wrong']}, {o['verbatim_wrong']:.1%}) | {o['clarified']} "
            f"| {o['oos_escalated']:.1%} | {o['other']} |"
        )


def baseline(questions: Sequence[Question], texts: dict[str, str]) -> None:
    import numpy as np

    from llm.embeddings import shared_embedder

    with (MANUAL / "sections.tsv").open(encoding="utf-8", newline="") as handle:
        sections = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    anchors = [s["anchor"] for s in sections]
    bodies = [f"{s['title']}. {' '.join(texts[s['anchor']].split())}"[:2000] for s in sections]
    asked = [q for q in questions if q.on_topic]
    embedder = shared_embedder(model_dir=None, name=None)
    vectors = np.asarray(embedder.embed(bodies))
    queries = np.asarray(embedder.embed([q.text for q in asked]))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ranked = np.argsort(-(queries @ vectors.T), axis=1)[:, :3]
    print("\n| half | questions | first section right | right in the top three |")
    print("|---|---:|---:|---:|")
    for half in HALVES:
        rows = [(q, r) for q, r in zip(asked, ranked, strict=True) if q.split == half]
        first = sum(anchors[r[0]] in q.anchors for q, r in rows)
        top3 = sum(any(anchors[i] in q.anchors for i in r) for q, r in rows)
        print(f"| {half} | {len(rows)} | {first / len(rows):.1%} | {top3 / len(rows):.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("html", "pdf"), help="one form of the manual")
    parser.add_argument("--with-faq", action="store_true", help="the FAQ's figures beside it")
    parser.add_argument("--no-tune", action="store_true", help="faq import --no-tune")
    parser.add_argument("--json", type=Path, help="also write every answer here")
    parser.add_argument("--baseline", action="store_true", help="the bare embedding model")
    parser.add_argument("--half", choices=HALVES, help="one half of the questions")
    args = parser.parse_args()
    if args.baseline:
        baseline(load_questions(), section_texts())
        return
    if args.with_faq:
        run_with_faq(args.no_tune)
        return
    questions, texts = load_questions(), section_texts()
    rows: list[HalfRun] = []
    for form in [args.only] if args.only else ["html", "pdf"]:
        rows.extend(run_manual(form, questions, texts, [args.half] if args.half else HALVES))
    print_manual(rows)
    if args.json is not None:
        dump = {
            f"{run.form}-{run.half}": [
                {**a, "id": q.id, "expected": [q.page, *q.anchors], "pdf_pages": q.pages}
                for a, q in zip(run.answers, run.asked, strict=True)
            ]
            for run in rows
        }
        args.json.write_text(json.dumps(dump, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
