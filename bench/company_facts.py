"""How well the company-fact check tells company questions from general ones.

The labelled questions in ``bench/data/company_facts.tsv`` are split in two
with a fixed seed: the tuning half (the only one looked at while the
patterns were written, and the exemplars shipped as
``bot/knowledge/company_facts.tsv``) and the test half (the figures to
report). For each half: the share of company-fact questions stopped (no
knowledge is loaded, so every one should be) and the share of general
questions stopped (none should be), by the patterns alone and with the
embedding model; and what the check costs a plain chat answer. A tuning
question is compared with the other exemplars only (leave one out).

    python bench/company_facts.py                    # both halves, test half first
    python bench/company_facts.py --misses           # also the tuning half's wrong calls
    python bench/company_facts.py --write-exemplars  # ship the tuning half as exemplars
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.knowledge.company_facts import (
    EXEMPLARS_FILE,
    MARGIN,
    closeness,
    company_fact_subject,
    general_request,
    load_exemplars,
)
from llm.embeddings import SentenceEmbedder

DATA = Path(__file__).resolve().parent / "data" / "company_facts.tsv"
SEED = 24
Rows = list[tuple[str, str]]


def split(rows: Rows, seed: int = SEED) -> dict[str, Rows]:
    """Half of each label to tuning, half to test, the same on every run."""
    halves: dict[str, Rows] = {"tuning": [], "test": []}
    for label in ("company", "general"):
        labelled = [row for row in rows if row[0] == label]
        random.Random(f"{seed}:{label}").shuffle(labelled)
        middle = len(labelled) // 2
        halves["tuning"] += labelled[:middle]
        halves["test"] += labelled[middle:]
    return halves


def write_exemplars(tuning: Rows) -> None:
    lines = ["# The tuning half of bench/data/company_facts.tsv (bench/company_facts.py)."]
    lines += [f"{label}\t{question}" for label, question in tuning]
    EXEMPLARS_FILE.write_text("\n".join(lines) + "\n", encoding="utf-8")


def similar(
    embedder: SentenceEmbedder, exemplars: Rows, questions: list[str], *, leave_one_out: bool
) -> np.ndarray:
    """Whether each question is closer to the company exemplars by MARGIN."""
    vectors = embedder.embed([q for _, q in exemplars])
    company = np.array([label == "company" for label, _ in exemplars])
    query = embedder.embed(questions)
    if not leave_one_out:
        return closeness(query, vectors[company], vectors[~company]) > MARGIN
    verdicts = []
    for i, row in enumerate(query):
        keep = np.ones(len(exemplars), dtype=bool)
        keep[i] = False  # the question itself is an exemplar
        mine = closeness(row[None, :], vectors[keep & company], vectors[keep & ~company])
        verdicts.append(bool(mine[0] > MARGIN))
    return np.array(verdicts)


def report(name: str, rows: Rows, embedded: np.ndarray, *, misses: bool) -> None:
    questions = [q for _, q in rows]
    company = np.array([label == "company" for label, _ in rows])
    by_pattern = np.array([company_fact_subject(q) is not None for q in questions])
    by_model = embedded & ~np.array([general_request(q) for q in questions])
    for method, stopped in (("patterns", by_pattern), ("patterns+model", by_pattern | by_model)):
        hit, fired = int(stopped[company].sum()), int(stopped[~company].sum())
        print(
            f"{name:7} {method:15} company-fact stopped {hit}/{company.sum()} "
            f"({100 * hit / company.sum():.1f} %), general stopped {fired}/{(~company).sum()} "
            f"({100 * fired / (~company).sum():.1f} %)"
        )
    if misses:
        both = by_pattern | by_model
        for question, is_company, stopped in zip(questions, company, both, strict=True):
            if is_company != stopped:
                print(f"    {'answered' if is_company else 'stopped'}: {question}")


def costs(embedder: SentenceEmbedder, questions: list[str]) -> None:
    started = time.perf_counter()
    for _ in range(20):
        for question in questions:
            company_fact_subject(question)
    pattern = (time.perf_counter() - started) / (20 * len(questions))
    sample = questions[:40]
    started = time.perf_counter()
    for question in sample:
        embedder.embed([question])
    model = (time.perf_counter() - started) / len(sample)
    print(f"cost a message: patterns {pattern * 1e6:.0f} µs, the embedding {model * 1e3:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", action="store_true", help="list the tuning half's wrong calls")
    parser.add_argument("--write-exemplars", action="store_true", help="ship the tuning half")
    args = parser.parse_args()
    halves = split(load_exemplars(DATA))
    if args.write_exemplars:
        write_exemplars(halves["tuning"])
    exemplars = load_exemplars()
    if sorted(exemplars) != sorted(halves["tuning"]):
        raise SystemExit("the shipped exemplars are not the tuning half: --write-exemplars")
    embedder = SentenceEmbedder()
    started = time.perf_counter()
    embedder.load()
    print(f"embedding model loaded in {time.perf_counter() - started:.1f} s")
    test = [q for _, q in halves["test"]]
    # The test half's wrong calls are not listed: reading them would tune on it.
    report(
        "test",
        halves["test"],
        similar(embedder, exemplars, test, leave_one_out=False),
        misses=False,
    )
    tuning = [q for _, q in exemplars]
    embedded = similar(embedder, exemplars, tuning, leave_one_out=True)
    report("tuning", exemplars, embedded, misses=args.misses)
    costs(embedder, test)


if __name__ == "__main__":
    main()
