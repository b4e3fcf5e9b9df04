"""How the grounded answering path fares with a real model.

    python bench/faq_grounded.py [--model embedded] [--concurrency 8] [--show 5]

Imports the evaluation FAQ (tests/data/faq) into a fresh SQLite file, then
sends every reworded question that the policy routes to the grounded path
through the conversation manager with the local model. For each it records
what the customer would have been shown:

* ``grounded``: the model's answer passed the citation check (cites only the
  entries it was given, and most of its content words come from them);
* ``verbatim`` / ``escalated``: the check discarded the model's answer and the
  policy fell back to the best entry's curated answer, or to a human.

For shown model answers it also counts how many cite the right entry (any
entry of its duplicate group). Prints a few answers of each kind to read.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.app import create_manager
from bot.knowledge.evaluation import faq_jsonl, load_eval_set
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.settings import DEFAULT_SYSTEM_PROMPT
from bot.types import ConversationRef, Inbound, Reply
from llm.base import SamplingParams
from llm.embeddings import SentenceEmbedder
from llm.transformers import TransformersBackend
from storage.db import Database
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "faq"

_CITED = re.compile(r"\[(\d{1,2})\]")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--show", type=int, default=4, help="answers of each kind to print")
    args = parser.parse_args()

    database = Database(f"sqlite:///{Path(tempfile.mkdtemp()) / 'grounded.db'}")
    await database.upgrade()
    backend = TransformersBackend(
        model=args.model,
        data_dir=args.data_dir,
        max_batch_size=args.concurrency,
        max_queue=1000,
    )
    await backend.load()
    kb = KnowledgeBase(repository=KnowledgeRepository(database), embedder=SentenceEmbedder())
    manager = create_manager(
        repository=Repository(database),
        backend=backend,
        system_prompt=DEFAULT_SYSTEM_PROMPT,
        sampling=SamplingParams(max_new_tokens=200, temperature=0.0),
        llm_timeout=None,
        max_input_chars=4000,
        history_messages=10,
        knowledge=kb,
    )
    await kb.import_file(faq_jsonl(DATA))
    eval_set = load_eval_set(DATA)
    routed = []
    for expected, question in eval_set.reworded:
        if (await kb.decide(question)).path == "grounded":
            routed.append((expected, question))

    reasons: Counter[str] = Counter()

    class _Reasons(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.msg == "inbound %s: grounded answer discarded: %s":
                # "only 3/9 content words come from ..." -> "only N/M content words ..."
                reasons[re.sub(r"\d+", "N", str(record.args[1]))] += 1  # type: ignore[index]

    knowledge_log = logging.getLogger("bot.generation")
    knowledge_log.setLevel(logging.INFO)
    knowledge_log.addHandler(_Reasons())
    gate = asyncio.Semaphore(args.concurrency)
    outcomes: Counter[str] = Counter()
    right_citation = 0
    samples: dict[str, list[str]] = {}

    async def collect(reply: Reply) -> None:
        await reply.collect()

    async def one(number: int, expected: str, question: str) -> None:
        nonlocal right_citation
        ref = ConversationRef("bench", "", f"q{number}")
        inbound = Inbound(ref=ref, user="bench", text=question, event_id=f"q{number}")
        async with gate:
            reply = await manager.handle(inbound, collect)
        logged = (await kb.repository.answers(conversation_key=ref.key, limit=1))[0]
        path = logged["path"]
        outcomes[path] += 1
        if path == "grounded":
            refs_given = [e["ref"] for e in logged["entries"]]
            body = reply.text.split("\n\nSources:")[0]
            cited = {int(n) for n in _CITED.findall(body) if 0 < int(n) <= len(refs_given)}
            refs = {refs_given[n - 1] for n in cited}
            right_citation += bool(refs & eval_set.accepted(expected))
        samples.setdefault(path, []).append(f"Q: {question}\n(expected {expected})\n{reply.text}")

    started = time.perf_counter()
    await asyncio.gather(*(one(i, e, q) for i, (e, q) in enumerate(routed)))
    seconds = time.perf_counter() - started
    await backend.aclose()
    await database.dispose()

    for path, texts in sorted(samples.items()):
        for text in texts[: args.show]:
            print(f"--- {path}\n{text}\n")
    total = len(routed)
    shown = outcomes["grounded"]
    print(f"model {backend.name}; {total} of {len(eval_set.reworded)} questions routed to the")
    print(f"grounded path, answered in {seconds:.0f} s ({args.concurrency} at a time)")
    print()
    print("| outcome | questions | share |")
    print("|---|---:|---:|")
    for path in ("grounded", "verbatim", "escalated"):
        share = outcomes[path] / total if total else 0.0
        print(f"| {path} | {outcomes[path]} | {100 * share:.1f} % |")
    if reasons:
        print("\nwhy model answers were discarded:")
        for reason, count in reasons.most_common():
            print(f"- {count}: {reason}")
    if shown:
        print(
            f"\nshown model answers citing the right entry: {right_citation}/{shown} "
            f"({100 * right_citation / shown:.1f} %)"
        )


if __name__ == "__main__":
    asyncio.run(main())
