"""How fast documents are taken in and searched.

Ingest: ``deskmate docs add`` of the evaluation manual's 73-page PDF and,
separately, of its 17 HTML pages, each into a fresh data folder; the time is
the whole command's wall time (process start, parsing, embedding, storing),
as an operator waits for it, and beside it the CPU time the command used
(on a shared machine, the work done whatever the wait for a core).
``deskmate docs list --json`` gives the chunks.

Retrieval: the HTML manual is added with ``deskmate docs add``, then copied
through the document repository into a library of at least 20,000 chunks,
each copy a different product (see ``_replicate``). The manual's questions
go through ``KnowledgeBase.lookup`` in this process, the way the bot ranks
passages for a message, without the model re-ranker; then the local model
re-ranks the three best passages of every question, as it re-ranks a close
FAQ call, and its part alone is timed.

    python bench/docs_speed.py                       # both parts
    python bench/docs_speed.py --skip-retrieval --rounds 3
    python bench/docs_speed.py --skip-ingest --library /tmp/docs-library-x
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from docs_eval import HTML_DIR, PDF_FILE, fresh_env, load_questions  # noqa: E402
from faq_ask import deskmate  # noqa: E402

from storage.documents_repo import ChunkInput, ChunkRecord  # noqa: E402

TARGET_CHUNKS = 20_000


def listed_chunks(env: dict[str, str]) -> tuple[int, int]:
    """(documents, chunks) as ``deskmate docs list --json`` reports them."""
    out = deskmate(["docs", "list", "--json"], env)
    documents = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return len(documents), sum(int(d.get("chunks") or 0) for d in documents)


def ingest(rounds: int) -> list[str]:
    lines = []
    for name, target in (("PDF, 73 pages", PDF_FILE), ("HTML, 17 pages", HTML_DIR)):
        times, cpu, chunks = [], [], 0
        for _ in range(rounds):
            folder, env = fresh_env("docs-speed-")
            used = _children_cpu()
            started = time.perf_counter()
            deskmate(["docs", "add", str(target)], env)
            times.append(time.perf_counter() - started)
            cpu.append(_children_cpu() - used)
            _, chunks = listed_chunks(env)
            shutil.rmtree(folder, ignore_errors=True)
        rounds_s = ", ".join(f"{t:.1f}" for t in times)
        lines.append(
            f"| {name} | {chunks} | {statistics.median(times):.1f} s | {rounds_s} "
            f"| {statistics.median(cpu):.1f} s |"
        )
        print(lines[-1], flush=True)
    return lines


def _children_cpu() -> float:
    """CPU seconds (user + system) the finished child processes used: on a
    shared machine, the work done, whatever the waiting for a core."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def build_library(library: Path | None) -> tuple[Path, dict[str, str], int]:
    """A data folder holding at least ``TARGET_CHUNKS`` chunks (reused when given)."""
    if library is not None:
        _, env = fresh_env("unused-")
        env["DESKMATE_DATA_DIR"] = str(library)
        return library, env, listed_chunks(env)[1]
    folder, env = fresh_env("docs-library-")
    deskmate(["docs", "add", str(HTML_DIR)], env)
    started = time.perf_counter()
    asyncio.run(_replicate(env))
    print(f"copies stored in {time.perf_counter() - started:.0f} s", flush=True)
    return folder, env, listed_chunks(env)[1]


async def _replicate(env: dict[str, str]) -> None:
    """Copies of the manual's documents, each a different product: "Debian"
    renamed in every text, each vector moved a little at random (a cosine of
    about 0.97 to the original) so that no two copies rank alike. The vectors
    are not those of the renamed text (embedding 20,000 passages would take
    most of an hour here); what a lookup costs depends on the number of
    passages and of keyword matches, not on what the vectors say."""
    import numpy as np

    from bot.settings import Settings
    from storage.db import Database
    from storage.documents_repo import DocumentFields, DocumentsRepository

    settings = Settings.from_env(env)
    db = Database(settings.effective_database_url)
    random = np.random.default_rng(0)
    try:
        repository = DocumentsRepository(db)
        originals = await repository.chunks(with_embeddings=True)
        by_document: dict[int, list[ChunkRecord]] = {}
        for chunk in originals:
            by_document.setdefault(chunk.document_id, []).append(chunk)
        copies = math.ceil(TARGET_CHUNKS / max(len(originals), 1)) - 1
        for n in range(1, copies + 1):
            product = f"Vireo{n:03d}"
            for chunks in by_document.values():
                first = chunks[0]
                fields = DocumentFields(
                    tenant="",
                    internal=False,
                    origin="file",
                    location=f"/library/{product}/{first.document_name}",
                    name=f"{product}/{first.document_name}",
                    title=first.document_title.replace("Debian", product),
                    format="html",
                    content_hash=f"{product}-{first.document_id}",
                )
                await repository.save(fields, [_copy(c, product, random) for c in chunks])
    finally:
        await db.dispose()


def _copy(chunk: ChunkRecord, product: str, random: Any) -> ChunkInput:
    import numpy as np

    vectors = np.frombuffer(chunk.embedding, dtype="<f4").reshape(2, -1)
    noise = random.normal(size=vectors.shape).astype(np.float32)
    noise *= 0.25 / np.linalg.norm(noise, axis=1, keepdims=True)
    moved = vectors + noise * np.linalg.norm(vectors, axis=1, keepdims=True)
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    text = chunk.text.replace("Debian", product)
    return ChunkInput(
        position=chunk.position,
        section=chunk.section.replace("Debian", product),
        anchor=chunk.anchor,
        page=chunk.page,
        text=text,
        text_hash=f"{product}-{chunk.text_hash}",
        embedding=np.ascontiguousarray(moved, dtype="<f4").tobytes(),
        embedding_model=chunk.embedding_model,
    )


async def time_lookups(
    env: dict[str, str], questions: Sequence[str], *, rerank: bool
) -> tuple[list[float], list[float]]:
    """Milliseconds per question: wall time, and CPU time of this process's
    threads. Without ``rerank``, ``KnowledgeBase.lookup`` as the bot ranks
    passages for a message; with it, the local model re-ranking the three
    best passages as it re-ranks a close FAQ call (the model's part only)."""
    from types import SimpleNamespace

    from bot.app import create_backend, create_knowledge_base
    from bot.knowledge.index import Hit
    from bot.knowledge.rerank import LikelihoodReranker
    from bot.settings import Settings
    from llm.base import Scorer
    from storage.db import Database

    settings = Settings.from_env({**env, "DESKMATE_FAQ_RERANK": "0"})
    db = Database(settings.effective_database_url)
    backend = create_backend(settings) if rerank else None
    try:
        kb = create_knowledge_base(db, settings, None)
        reranker = None
        if backend is not None:
            await backend.load()
            if not isinstance(backend, Scorer):
                raise SystemExit(f"{backend.name} cannot score: there is no re-ranker to time")
            # Every question re-ranked, not only close calls: the cost when it is.
            reranker = LikelihoodReranker(backend, margin=float("inf"))
        limit = max(kb.policy.grounded_entries, 3)
        took: list[float] = []
        cpu: list[float] = []
        for n, question in enumerate([*questions[:10], *questions]):  # 10 to warm up
            used, started = time.process_time(), time.perf_counter()
            found = await kb.lookup(question, limit=limit)
            if reranker is not None:
                used, started = time.process_time(), time.perf_counter()
                # The re-ranker reads an entry's question and answer: a
                # passage's heading path and text stand in for them.
                entries: list[Any] = [
                    SimpleNamespace(question=p.section or p.title, answer=p.text)
                    for p in found.passages
                ]
                hits = [
                    Hit(e, p.score, p.dense, p.keyword)
                    for e, p in zip(entries, found.passages, strict=True)
                ]
                await reranker.rerank(question, hits)
            if n >= 10:
                took.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - used) * 1000)
        return took, cpu
    finally:
        if backend is not None:
            await backend.aclose()
        await db.dispose()


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def retrieval(library: Path | None, rounds: int) -> list[str]:
    folder, env, chunks = build_library(library)
    print(f"library: {folder}, {chunks} chunks", flush=True)
    questions = [q.text for q in load_questions()]
    lines = []
    for rerank in (False, True):
        took: list[float] = []
        cpu: list[float] = []
        # The model's part takes seconds a question on a busy CPU: a sample of them.
        asked = questions[::4] if rerank else questions
        for _ in range(rounds):
            wall, used = asyncio.run(time_lookups(env, asked, rerank=rerank))
            took += wall
            cpu += used
        name = (
            "the model re-ranking the 3 best passages (its part alone)"
            if rerank
            else "lookup, without the model re-ranker"
        )
        lines.append(
            f"| {name} | {chunks} | {len(took)} | {statistics.median(took):.1f} ms "
            f"| {percentile(took, 0.95):.1f} ms | {max(took):.1f} ms "
            f"| {statistics.median(cpu):.1f} ms | {percentile(cpu, 0.95):.1f} ms |"
        )
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-retrieval", action="store_true")
    parser.add_argument("--library", type=Path, help="a data folder an earlier run built")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    if not args.skip_ingest:
        lines = ingest(args.rounds)
        print(
            "\n| document | chunks | docs add, median | rounds (s) | CPU, median |"
            "\n|---|---:|---:|---|---:|"
        )
        print("\n".join(lines))
    if not args.skip_retrieval:
        lines = retrieval(args.library, args.rounds)
        print(
            "\n| per question | chunks | questions | median | p95 | max | CPU median | CPU p95 |"
            "\n|---|---:|---:|---:|---:|---:|---:|---:|"
        )
        print("\n".join(lines))
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
