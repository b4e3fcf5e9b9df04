"""The knowledge base asked in other languages than its FAQ's, and in its own.

    python bench/faq_languages.py [--embedding-model multilingual-e5-small-q4]
                                  [--tune] [--sets sv-sv en-sv zh-en en-en]

For each set a fresh SQLite knowledge base imports the FAQ (the Swedish
original ``construction_faq_sv.csv`` or the English ``construction_faq_en.jsonl``,
the same 503 ids) and retrieval and policy score every question of both halves
(``bot.knowledge.evaluation``; no model re-ranking). The sets
(``tests/data/faq/languages/``, ``tests/data/faq/``):

- sv-sv: Swedish rewordings of Swedish entries, off-topic Swedish questions;
- en-sv: the English rewordings (``reworded.tsv``) asked of the Swedish FAQ,
  the English off-topic questions;
- zh-en: Chinese questions asked of the English FAQ, off-topic Chinese questions;
- en-en: the English knowledge benchmark itself, for comparison.

In-scope questions fall into the half of their entry (``split.tsv``, whole
duplicate groups together); the off-topic questions of the new sets alternate
(first tuning, second test, ...). Two rows per half: with the thresholds in
force (``Policy``'s defaults for the model), and with thresholds chosen on the
tuning half (``deskmate faq eval``'s procedure). Prints markdown for bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.knowledge import evaluation as ev
from bot.knowledge import tuning
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.policy import Policy
from llm.embeddings import Embedder, named_embedder
from storage.db import Database
from storage.knowledge_repo import KnowledgeRepository

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "faq"
LANGS = DATA / "languages"
FAQS = {"sv": DATA / "construction_faq_sv.csv", "en": ev.faq_jsonl(DATA)}
# set -> (FAQ, in-scope questions, off-topic questions)
SETS = {
    "sv-sv": ("sv", LANGS / "reworded_sv.tsv", LANGS / "out_of_scope_sv.txt"),
    "en-sv": ("sv", DATA / "reworded.tsv", DATA / "out_of_scope.txt"),
    "zh-en": ("en", LANGS / "reworded_zh.tsv", LANGS / "out_of_scope_zh.txt"),
    "en-en": ("en", DATA / "reworded.tsv", DATA / "out_of_scope.txt"),
}

Labelled = list[tuple[str, frozenset[str]]]


def _lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in text if line.strip() and not line.startswith("#")]


def halves(in_scope: Path, off_topic: Path) -> dict[str, Labelled]:
    """Both halves of one set, as (question, accepted ids)."""
    if in_scope == DATA / "reworded.tsv":
        return {h: ev.labelled(ev.load_half(DATA, h)) for h in ev.HALVES}
    full = ev.load_eval_set(DATA)
    split = {}
    for line in _lines(DATA / ev.SPLIT_FILE):
        key, value = line.split("\t")
        split[key] = value.strip()
    out: dict[str, Labelled] = {h: [] for h in ev.HALVES}
    for line in _lines(in_scope):
        entry, question = line.split("\t")
        out[split[entry]].append((question, full.accepted(entry)))
    for n, question in enumerate(_lines(off_topic)):
        out[ev.HALVES[n % 2]].append((question, frozenset()))
    return out


async def knowledge_base(
    language: str, embedder: Embedder, tune: bool
) -> tuple[KnowledgeBase, str]:
    database = Database(f"sqlite:///{Path(tempfile.mkdtemp()) / 'faq.db'}")
    await database.upgrade()
    kb = KnowledgeBase(
        repository=KnowledgeRepository(database),
        embedder=embedder,
        policy=Policy.for_model(embedder.name),
        model_store=Path(tempfile.mkdtemp()),
    )
    started = time.perf_counter()
    report = await kb.import_file(FAQS[language])
    note = f"import {report.created} entries {time.perf_counter() - started:.0f} s"
    if tune:
        outcome = await tuning.tune(kb)
        note += f", `faq tune` {outcome.seconds:.0f} s"
    return kb, note


def embedder_policy(embedder: Embedder) -> Policy:
    return Policy.for_model(embedder.name)


async def latency(kb: KnowledgeBase, questions: list[str]) -> tuple[float, float]:
    times = []
    for question in questions:
        started = time.perf_counter()
        await kb.lookup(question, limit=3)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def table_row(name: str, half: str, how: str, o: dict[str, float | int]) -> str:
    return (
        f"| {name} | {half} | {how} | {o['in_scope']} / {o['off_topic']} | {o['top1']:.1%} "
        f"| {o['top3']:.1%} | {o['covered']:.1%} | {o['verbatim']} ({o['verbatim_wrong']:.1%}) "
        f"| {o['clarified']} | {o['oos_escalated']:.1%} |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedding-model", default="")
    parser.add_argument("--tune", action="store_true", help="adapt the model after import")
    parser.add_argument("--sets", nargs="*", default=list(SETS))
    parser.add_argument("--precision", type=float, default=0.97)
    args = parser.parse_args()
    embedder = named_embedder(args.embedding_model or None)
    bases: dict[str, tuple[KnowledgeBase, str]] = {}
    rows: list[str] = []
    every: dict[str, dict[str, list[ev.Scored]]] = {}
    for name in args.sets:
        language, in_scope, off_topic = SETS[name]
        if language not in bases:
            bases[language] = await knowledge_base(language, embedder, args.tune)
        kb, note = bases[language]
        sets = halves(in_scope, off_topic)
        scored = {h: await ev.score_questions(kb, sets[h]) for h in ev.HALVES}
        every[name] = scored
        policy = kb.policy
        margin = policy.verbatim_margin
        curve = ev.verbatim_curve(scored["tune"], margin=margin)
        verbatim = ev.recommend_verbatim(curve, args.precision) or 1.0
        grounded = min(ev.recommend_escalation(scored["tune"], 0.95) or 0.0, verbatim)
        p50, p95 = await latency(kb, [q for h in ev.HALVES for q, _ in sets[h]])
        print(
            f"{name}: {note}; defaults verbatim >= {policy.verbatim_score:.2f}, scope >= "
            f"{policy.grounded_score:.2f}; from the tuning half verbatim >= {verbatim:.2f}, "
            f"scope >= {grounded:.2f}; lookup p50 {p50:.1f} ms, p95 {p95:.1f} ms",
            flush=True,
        )
        for half in ev.HALVES:
            for how, v, g in (
                ("defaults", policy.verbatim_score, policy.grounded_score),
                ("from tuning half", verbatim, grounded),
            ):
                o = ev.outcomes(scored[half], verbatim=v, margin=margin, grounded=g)
                rows.append(table_row(name, half, how, o))
    # One pair of thresholds for every language: chosen on all tuning halves together.
    pooled = [s for scored in every.values() for s in scored["tune"]]
    margin = embedder_policy(embedder).verbatim_margin
    curve = ev.verbatim_curve(pooled, margin=margin)
    verbatim = ev.recommend_verbatim(curve, args.precision) or 1.0
    grounded = min(ev.recommend_escalation(pooled, 0.95) or 0.0, verbatim)
    print(f"all tuning halves together: verbatim >= {verbatim:.2f}, scope >= {grounded:.2f}")
    for name, scored in every.items():
        for half in ev.HALVES:
            o = ev.outcomes(scored[half], verbatim=verbatim, margin=margin, grounded=grounded)
            rows.append(table_row(name, half, "from all tuning halves", o))
    print(f"\nembedding model: {embedder.name}{' (adapted)' if args.tune else ''}")
    print(
        "| set | half | thresholds | in scope / off-topic | top-1 | top-3 "
        "| right entry verbatim or offered | verbatim answers (wrong) | offered | "
        "off-topic escalated |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    for kb, _ in bases.values():
        await kb.repository.db.dispose()


if __name__ == "__main__":
    asyncio.run(main())
