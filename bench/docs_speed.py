"""How fast documents are taken in and searched.

Ingest: ``deskmate docs add`` of the evaluation manual's 73-page PDF and,
separately, of its 17 HTML pages, each into a fresh data folder; the time is
the whole command's wall time (process start, parsing, embedding, storing),
as an operator waits for it. ``deskmate docs list --json`` gives the chunks.

Retrieval: a library of at least 20,000 chunks is made from copies of the
HTML manual, each copy a different product (every "Debian" renamed, so no two
copies share their text, their vectors or their keywords); the copies are
added with one ``deskmate docs add``. Then the manual's questions go through
``KnowledgeBase.lookup`` in this process, the way the bot ranks passages for
a message: first without the model re-ranker, then with the local model
loaded and the re-ranker on.

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
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from docs_eval import HTML_DIR, PDF_FILE, fresh_env, load_questions  # noqa: E402
from faq_ask import deskmate  # noqa: E402

TARGET_CHUNKS = 20_000


def listed_chunks(env: dict[str, str]) -> tuple[int, int]:
    """(documents, chunks) as ``deskmate docs list --json`` reports them."""
    out = deskmate(["docs", "list", "--json"], env)
    documents = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return len(documents), sum(int(d.get("chunks") or 0) for d in documents)


def ingest(rounds: int) -> list[str]:
    lines = []
    for name, target in (("PDF, 73 pages", PDF_FILE), ("HTML, 17 pages", HTML_DIR)):
        times, chunks = [], 0
        for _ in range(rounds):
            folder, env = fresh_env("docs-speed-")
            started = time.perf_counter()
            deskmate(["docs", "add", str(target)], env)
            times.append(time.perf_counter() - started)
            _, chunks = listed_chunks(env)
            shutil.rmtree(folder, ignore_errors=True)
        rounds_s = ", ".join(f"{t:.1f}" for t in times)
        lines.append(f"| {name} | {chunks} | {statistics.median(times):.1f} s | {rounds_s} |")
        print(lines[-1], flush=True)
    return lines


def write_copies(root: Path, copies: int) -> None:
    """``copies`` renamed copies of the HTML manual under ``root``."""
    pages = sorted(HTML_DIR.glob("*.html"))
    for n in range(copies):
        folder = root / f"product-{n:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        product = "Debian" if n == 0 else f"Vireo{n:03d}"
        for page in pages:
            text = page.read_text(encoding="utf-8")
            (folder / page.name).write_text(text.replace("Debian", product), encoding="utf-8")


def build_library(library: Path | None) -> tuple[Path, dict[str, str], int]:
    """A data folder holding at least ``TARGET_CHUNKS`` chunks (reused when given)."""
    if library is not None:
        _, env = fresh_env("unused-")
        env["DESKMATE_DATA_DIR"] = str(library)
        return library, env, listed_chunks(env)[1]
    folder, env = fresh_env("docs-library-")
    sample = folder / "sample"
    write_copies(sample, 1)
    deskmate(["docs", "add", str(sample)], env)
    _, per_copy = listed_chunks(env)
    deskmate(["docs", "remove", str(sample / "product-000")], env)
    copies = math.ceil(TARGET_CHUNKS / max(per_copy, 1))
    pages = folder / "manuals"
    write_copies(pages, copies)
    print(f"{copies} copies of {per_copy} chunks: adding them…", flush=True)
    started = time.perf_counter()
    deskmate(["docs", "add", str(pages)], env)
    print(f"added in {time.perf_counter() - started:.0f} s", flush=True)
    return folder, env, listed_chunks(env)[1]


async def time_lookups(
    env: dict[str, str], questions: Sequence[str], *, rerank: bool
) -> list[float]:
    from bot.app import create_backend, create_knowledge_base
    from bot.settings import Settings
    from storage.db import Database

    settings = Settings.from_env({**env, "DESKMATE_FAQ_RERANK": "1" if rerank else "0"})
    db = Database(settings.effective_database_url)
    backend = None
    if rerank:
        backend = create_backend(settings)
        await backend.load()
    try:
        kb = create_knowledge_base(db, settings, backend)
        limit = max(kb.policy.grounded_entries, 3)
        for question in questions[:10]:  # warm: caches, the keyword index's pages
            await kb.lookup(question, limit=limit)
        took = []
        for question in questions:
            started = time.perf_counter()
            await kb.lookup(question, limit=limit)
            took.append((time.perf_counter() - started) * 1000)
        return took
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
        for _ in range(rounds):
            took.extend(asyncio.run(time_lookups(env, questions, rerank=rerank)))
        name = "with the model re-ranker" if rerank else "without the model re-ranker"
        lines.append(
            f"| {name} | {chunks} | {len(took)} | {statistics.median(took):.1f} ms "
            f"| {percentile(took, 0.95):.1f} ms | {max(took):.1f} ms |"
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
        print("\n| document | chunks | docs add, median | rounds (s) |\n|---|---:|---:|---|")
        print("\n".join(lines))
    if not args.skip_retrieval:
        lines = retrieval(args.library, args.rounds)
        print(
            "\n| lookup | chunks | questions | median | p95 | max |\n|---|---:|---:|---:|---:|---:|"
        )
        print("\n".join(lines))
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
