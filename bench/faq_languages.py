"""The knowledge base asked in other languages than its FAQ's, and in its own.

    python bench/faq_languages.py [--embedding-model all-MiniLM-L6-v2|multilingual]
                                  [--tune] [--keep DIR] [--sets sv-sv en-sv zh-en en-en]

For each set the knowledge base a deployment builds with default settings
(``create_knowledge_base``: ``auto``, two models; or the model named) imports the
FAQ (the Swedish original ``construction_faq_sv.csv`` or the English
``construction_faq_en.jsonl``, the same 503 ids) into SQLite, fresh or kept in
``--keep`` and reused, and retrieval and policy score every question of both
halves (``bot.knowledge.evaluation``; no model re-ranking). The sets
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
tuning half (``deskmate faq eval``'s procedure), with the per-pair thresholds
(``policy.MULTILINGUAL_PAIRS``) they correspond to; how many questions went to
which language pair; lookup times, wall and CPU. Prints markdown for bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.app import create_knowledge_base
from bot.knowledge import evaluation as ev
from bot.knowledge import tuning
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.policy import pair_scale
from bot.settings import Settings
from storage.db import Database

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
    language: str, model: str, tune: bool, keep: Path | None
) -> tuple[KnowledgeBase, str]:
    """The knowledge base a deployment builds (``create_knowledge_base``) with
    default settings, but ``DESKMATE_EMBEDDING_MODEL`` when ``model`` names one;
    no chat model, so no re-ranker. ``keep``: a folder whose database is reused
    (imported once, every model's vectors kept)."""
    folder = keep or Path(tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    env = {"DESKMATE_DATA_DIR": str(folder / f"data-{model or 'default'}")}
    if model:
        env["DESKMATE_EMBEDDING_MODEL"] = model
    database = Database(f"sqlite:///{folder / f'faq-{language}.db'}")
    await database.upgrade()
    kb = create_knowledge_base(database, Settings.from_env(env))
    started = time.perf_counter()
    if await kb.repository.entries():
        await kb.retriever.refresh(force=True)
        if kb.crosslingual is not None:
            await kb.crosslingual.refresh(force=True)
        note = f"reused, loaded in {time.perf_counter() - started:.0f} s"
    else:
        report = await kb.import_file(FAQS[language])
        note = f"import {report.created} entries {time.perf_counter() - started:.0f} s"
    if tune:
        outcome = await tuning.tune(kb)
        note += f", `faq tune` {outcome.seconds:.0f} s"
    return kb, note


async def latency(kb: KnowledgeBase, questions: list[str]) -> tuple[float, ...]:
    """p50 and p95 of ``kb.lookup`` per question: wall time, and the process's CPU
    time (every thread's), which a busy machine inflates far less: on a quiet
    machine with two cores a lookup takes at most its CPU time."""
    wall, cpu = [], []
    for question in questions:
        started, used = time.perf_counter(), time.process_time()
        await kb.lookup(question, limit=3)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - used) * 1000)
    return tuple(float(np.percentile(t, p)) for t in (wall, cpu) for p in (50, 95))


def table_row(name: str, half: str, how: str, o: dict[str, float | int]) -> str:
    return (
        f"| {name} | {half} | {how} | {o['in_scope']} / {o['off_topic']} | {o['top1']:.1%} "
        f"| {o['top3']:.1%} | {o['covered']:.1%} | {o['verbatim']} ({o['verbatim_wrong']:.1%}) "
        f"| {o['clarified']} | {o['oos_escalated']:.1%} |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedding-model", default="", help="default: the deployment's")
    parser.add_argument("--tune", action="store_true", help="adapt the model after import")
    parser.add_argument("--sets", nargs="*", default=list(SETS))
    parser.add_argument("--precision", type=float, default=0.97)
    parser.add_argument("--keep", type=Path, help="reuse the databases in this folder")
    args = parser.parse_args()
    bases: dict[str, tuple[KnowledgeBase, str]] = {}
    rows: list[str] = []
    for name in args.sets:
        language, in_scope, off_topic = SETS[name]
        if language not in bases:
            bases[language] = await knowledge_base(
                language, args.embedding_model, args.tune, args.keep
            )
        kb, note = bases[language]
        sets = halves(in_scope, off_topic)
        scored = {h: await ev.score_questions(kb, sets[h]) for h in ev.HALVES}
        policy = kb.policy
        margin = policy.verbatim_margin
        curve = ev.verbatim_curve(scored["tune"], margin=margin)
        verbatim = ev.recommend_verbatim(curve, args.precision)
        grounded = min(ev.recommend_escalation(scored["tune"], 0.95) or 0.0, verbatim or 1.0)
        questions = [q for h in ev.HALVES for q, _ in sets[h]]
        pairs = Counter([str(await kb.faq.pair(q, "")) for q in questions])
        p50, p95, cpu50, cpu95 = await latency(kb, questions)
        print(
            f"{name}: {note}; routed (question, entries) {dict(pairs)}; defaults verbatim >= "
            f"{policy.verbatim_score:.2f}, scope >= {policy.grounded_score:.2f}; from the "
            f"tuning half verbatim >= {verbatim}, scope >= {grounded:.2f}; lookup p50 "
            f"{p50:.1f} ms, p95 {p95:.1f} ms (CPU p50 {cpu50:.1f} ms, p95 {cpu95:.1f} ms)",
            flush=True,
        )
        if kb.crosslingual is not None and name != "en-en":
            # The pair's own thresholds that would put these on the policy's.
            scale = pair_scale(*name.split("-"))
            raw_v = scale.verbatim_score + (verbatim - policy.verbatim_score) if verbatim else 1.0
            raw_g = scale.grounded_score + grounded - policy.grounded_score
            print(f"  {name}: PairScale(verbatim_score={raw_v:.2f}, grounded_score={raw_g:.2f})")
        for half in ev.HALVES:
            for how, v, g in (
                ("defaults", policy.verbatim_score, policy.grounded_score),
                ("from tuning half", verbatim or 1.0, grounded),
            ):
                o = ev.outcomes(scored[half], verbatim=v, margin=margin, grounded=g)
                rows.append(table_row(name, half, how, o))
    print(
        f"\nembedding model: {args.embedding_model or 'default'}{' (adapted)' if args.tune else ''}"
    )
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
