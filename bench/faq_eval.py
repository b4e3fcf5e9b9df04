"""Knowledge-base retrieval benchmark.

    python bench/faq_eval.py [--entries 5000] [--database-url URL] [--tune-seeds 0 1 2]
                             [--embedding-model DIR] [--rerank]

``--database-url`` runs against that database instead of a fresh SQLite file
(e.g. an empty PostgreSQL database: its FAQ tables are emptied first).
``--rerank`` also scores every model with close calls re-ranked by the embedded
SmolLM2 model, as a bot running the embedded model does (``DESKMATE_FAQ_RERANK``),
right after scoring it without, so both rows come from the same run.
``--embedding-model`` measures another sentence-transformers folder instead of
the shipped all-MiniLM-L6-v2 (what ``DESKMATE_EMBEDDING_MODEL`` selects).

1. Imports the real 503-entry FAQ (tests/data/faq) with the real embedding
   model and scores the 162 reworded and 50 out-of-scope questions: top-1 /
   top-3 accuracy, share answered verbatim / grounded / escalated, how often a
   verbatim answer is the right entry, out-of-scope refusal rate.
2. Adapts the embedding model to the FAQ (``deskmate faq tune``, once per
   ``--tune-seeds`` seed: training is randomised, so the spread matters) and
   scores the same questions again.
3. Pads the knowledge base to ``--entries`` with synthetic entries (each the
   question of one real entry with the answer of another, vectors mixed from
   theirs, so keyword and dense search do real work on every row), then
   measures retrieval latency (query embedding + database keyword search +
   dense scoring), p50 / p95 over all questions, and the accuracy again with
   those distractors present.

Prints a markdown table for bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.knowledge import tuning
from bot.knowledge.evaluation import EvalSet, evaluate, faq_jsonl, load_eval_set
from bot.knowledge.index import unpack
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.rerank import LikelihoodReranker
from llm.embeddings import (
    MULTILINGUAL_MODEL_NAME,
    E5Embedder,
    SentenceEmbedder,
    configured_model_name,
)
from storage.db import Database
from storage.knowledge_repo import EntryInput, KnowledgeRepository

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "faq"


async def pad(kb: KnowledgeBase, target: int, seed: int = 7) -> int:
    entries = await kb.repository.entries(with_embeddings=True)
    rng = random.Random(seed)
    dim = kb.retriever.embedder.dim
    items = []
    for n in range(max(0, target - len(entries))):
        a, b = rng.sample(entries, 2)
        va, vb = unpack(a.embedding or b"", dim), unpack(b.embedding or b"", dim)
        noise = np.random.default_rng(n).normal(0, 0.02, size=(3, dim)).astype(np.float32)
        rows = np.stack([va[0], (va[-2] + vb[-2]) / 2, vb[-1]]) + noise
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        entry = EntryInput(
            question=f"{a.question} (variant {n})",
            answer=b.answer,
            source="synthetic",
            external_id=f"pad-{n}",
        )
        items.append((entry, rows.astype("<f4").tobytes()))
    await kb.repository.upsert_many("", items, embedding_model=kb.retriever.embedder.name)
    kb.retriever.invalidate()
    return len(items)


def _empty_faq(conn: Connection) -> None:
    conn.execute(text("DELETE FROM escalations"))
    conn.execute(text("DELETE FROM faq_answers"))
    conn.execute(text("DELETE FROM faq_entries"))
    if conn.dialect.name == "sqlite":
        conn.execute(text("DELETE FROM faq_fts"))


def row(name: str, s: dict[str, float | int]) -> str:
    pct = lambda v: f"{100 * float(v):.1f} %"  # noqa: E731
    if "reranked" in s:
        name += f", {s['reranked']} of {int(s['questions']) + int(s['out_of_scope'])} re-ranked"
    return (
        f"| {name} | {pct(s['top1'])} ({pct(s['top1_strict'])}) | {pct(s['top3'])} | "
        f"{pct(s['verbatim'])} / {pct(s['grounded'])} / {pct(s['escalated'])} | "
        f"{pct(s['verbatim_precision'])} | {pct(s['oos_refusal'])} | "
        f"{s['p50_ms']:.1f} / {s['p95_ms']:.1f} ms |"
    )


async def scored(kb: KnowledgeBase, eval_set: EvalSet) -> list[dict[str, float | int]]:
    """``evaluate``'s summary; with a re-ranker, first without it (the same run's
    baseline), then with it, counting the questions it re-ranked."""
    reranker, kb.retriever.reranker = kb.retriever.reranker, None
    summaries = [(await evaluate(kb, eval_set)).summary()]
    if reranker is not None:
        kb.retriever.reranker = reranker
        before = reranker.reranked
        summary = (await evaluate(kb, eval_set)).summary()
        summary["reranked"] = reranker.reranked - before
        summaries.append(summary)
    return summaries


async def halves(kb: KnowledgeBase, args: argparse.Namespace, name: str) -> None:
    """Thresholds from the tuning half only; the same thresholds on both halves."""
    from bot.knowledge import evaluation as ev

    tune_scored, test_scored = [
        await ev.score_questions(kb, ev.labelled(ev.load_half(DATA, h))) for h in ev.HALVES
    ]
    margin = kb.policy.verbatim_margin
    verbatim = ev.recommend_verbatim(ev.verbatim_curve(tune_scored, margin=margin), args.precision)
    grounded = ev.recommend_escalation(tune_scored, 0.95)
    verbatim = verbatim if verbatim is not None else 1.0
    grounded = min(grounded if grounded is not None else 0.0, verbatim)
    print(f"\n{name}: verbatim >= {verbatim:.2f} (margin {margin}), escalate < {grounded:.2f}")
    print(
        "| half | in scope / off-topic | top-1 | top-3 | right entry verbatim or offered "
        "| verbatim answers (wrong) | clarified | off-topic escalated |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for half, rows in zip(ev.HALVES, (tune_scored, test_scored), strict=True):
        o = ev.outcomes(rows, verbatim=verbatim, margin=margin, grounded=grounded)
        print(
            f"| {half} | {o['in_scope']} / {o['off_topic']} | {o['top1']:.1%} | {o['top3']:.1%} "
            f"| {o['covered']:.1%} | {o['verbatim']} ({o['verbatim_wrong']:.1%}) "
            f"| {o['clarified']} | {o['oos_escalated']:.1%} |"
        )
    sys.stdout.flush()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--tune-seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--embedding-model", type=Path, default=None)
    parser.add_argument(
        "--rerank", action="store_true", help="re-rank close calls with the embedded model"
    )
    parser.add_argument(
        "--halves",
        action="store_true",
        help="choose thresholds on the tuning half, report both halves (then stop)",
    )
    parser.add_argument("--precision", type=float, default=0.97)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'faq-bench.db'}"
    database = Database(url)
    await database.upgrade()
    await database.run(_empty_faq)
    folder = args.embedding_model
    embedder: SentenceEmbedder | E5Embedder
    if str(folder) == MULTILINGUAL_MODEL_NAME:
        embedder = E5Embedder()
    else:
        name = configured_model_name(folder) if folder is not None else None
        embedder = SentenceEmbedder(model_dir=folder, name=name)
    kb = KnowledgeBase(repository=KnowledgeRepository(database), embedder=embedder)
    backend = None
    if args.rerank:
        from llm.transformers import TransformersBackend

        backend = TransformersBackend()
        await backend.load()
        kb.retriever.reranker = LikelihoodReranker(backend)
    t0 = time.perf_counter()
    await asyncio.to_thread(embedder.load)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = await kb.import_file(faq_jsonl(DATA))
    import_s = time.perf_counter() - t0
    if args.halves:
        await halves(kb, args, f"{report.created} entries, base model")
        for seed in args.tune_seeds:
            kb.retriever.model_store = Path(tempfile.mkdtemp())
            outcome = await tuning.tune(kb, seed=seed)
            await halves(kb, args, f"after `faq tune` seed {seed} ({outcome.seconds:.0f} s)")
        await database.dispose()
        return
    eval_set = load_eval_set(DATA)
    real = await scored(kb, eval_set)
    tuned: list[tuple[int, float, list[dict[str, float | int]]]] = []
    for seed in args.tune_seeds:
        kb.retriever.model_store = Path(tempfile.mkdtemp())
        outcome = await tuning.tune(kb, seed=seed)
        tuned.append((seed, outcome.seconds, await scored(kb, eval_set)))
    padded_count = await pad(kb, args.entries)
    t0 = time.perf_counter()
    await kb.retriever.refresh(force=True)
    index_s = time.perf_counter() - t0
    padded = await scored(kb, eval_set)
    await database.dispose()
    if backend is not None:
        await backend.aclose()
    total = report.created + padded_count
    dump = {"real": real, "tuned": [t[2] for t in tuned], "padded": padded}
    print(json.dumps(dump, indent=1), file=sys.stderr)
    print(
        f"model load {load_s:.1f} s; import of {report.created} entries {import_s:.1f} s "
        f"({report.created / import_s:.1f} entries/s); index rebuild at {total} entries "
        f"{index_s * 1000:.0f} ms"
    )
    print()
    print(
        "| knowledge base | top-1 (strict) | top-3 | verbatim / grounded / escalated "
        "| verbatim right | out-of-scope escalated | retrieval p50 / p95 |"
    )
    print("|---|---|---|---|---|---|---|")
    for summary in real:
        print(row(f"{report.created} real entries", summary))
    for seed, seconds, summaries in tuned:
        for summary in summaries:
            name = f"{report.created} real entries, `faq tune` seed {seed} ({seconds:.0f} s)"
            print(row(name, summary))
    for summary in padded:
        print(row(f"{total} entries (real + synthetic)", summary))


if __name__ == "__main__":
    asyncio.run(main())
