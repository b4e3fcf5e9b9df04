"""Suggested replies: time from a customer's message in a ticket to the
suggestion posted in the ticket's thread, and whether drafting delays the
relay of the message itself.

    python bench/copilot_latency.py [--data-dir /work/model-cache] [--rounds 20]

In one process: a fresh SQLite file, the evaluation FAQ (tests/data/faq)
embedded with the bundled sentence model, the default local model
(``DESKMATE_MODEL=embedded`` on the CPU), the conversation manager, the help
desk and its outbox worker sending into an in-memory support space that
notes when each message arrives. A customer hands off once; then each round
the customer sends one question into the open ticket and the clock runs
until (a) the relay of the question and (b) the suggestion are posted.

* ``quoted``: the FAQ's own questions, which the policy quotes verbatim (no
  model call): target 2 s.
* ``written``: reworded questions with the verbatim threshold out of reach,
  so the model is asked to write each suggestion from the best entries (a
  reply that fails the citation check falls back to quoting the best entry,
  or to saying the knowledge does not cover it: posted when the model is done).
* ``relay``: the relay's latency with suggestions on (measured in the rounds
  above) against the same rounds with the copilot switched off.

Prints medians and p95 per kind, and how the written rounds ended (written,
fallen back to a quote, or unsupported).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.app import create_manager
from bot.handoff.config import HandoffSettings, parse_spaces
from bot.handoff.desk import HelpDesk
from bot.handoff.worker import OutboxWorker
from bot.knowledge.evaluation import faq_jsonl, load_eval_set
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.policy import Policy
from bot.settings import DEFAULT_SYSTEM_PROMPT
from bot.types import ConversationRef, Inbound, Reply, TicketThread
from llm.base import SamplingParams
from llm.embeddings import SentenceEmbedder
from llm.transformers import TransformersBackend
from storage.db import Database
from storage.handoff_repo import HandoffRepository
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "faq"


class Space:
    """The support space (and the customer's chat): when each message arrived,
    and when each edit of one did (a written suggestion streams by edits)."""

    name = "slack"
    # Slack's pace for edits of one message (the adapter's default).
    edit_interval = 1.2

    def __init__(self) -> None:
        self.posts: list[tuple[float, str]] = []
        self.edits: list[tuple[float, str]] = []
        self._ids = 0

    async def edit(
        self,
        ref: ConversationRef,
        message: str,
        text: str,
        *,
        buttons: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.edits.append((time.perf_counter(), text))
        self.posts.append((time.perf_counter(), text))

    async def post(
        self,
        ref: ConversationRef,
        text: str,
        *,
        reply_to: str = "",
        buttons: Sequence[tuple[str, str]] = (),
    ) -> str:
        self.posts.append((time.perf_counter(), text))
        self._ids += 1
        return str(self._ids)

    async def open_ticket(
        self, space: ConversationRef, *, title: str, text: str, ticket_id: int
    ) -> TicketThread:
        self.posts.append((time.perf_counter(), text))
        self._ids += 1
        return TicketThread(thread=str(self._ids), message=str(self._ids))

    async def arrival(self, after: int, wanted: str, within: float = 300.0) -> float:
        deadline = time.perf_counter() + within
        while time.perf_counter() < deadline:
            for at, text in self.posts[after:]:
                if wanted in text:
                    return at
            await asyncio.sleep(0.005)
        raise TimeoutError(f"never posted: {wanted!r}")


def summary(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    median = statistics.median(values) * 1000
    return f"median {median:.0f} ms, p95 {p95 * 1000:.0f} ms (n={len(values)})"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--rounds", type=int, default=12, help="questions of each kind")
    parser.add_argument(
        "--written-rounds", type=int, default=None, help="model-written rounds (default: --rounds)"
    )
    args = parser.parse_args()

    database = Database(f"sqlite:///{Path(tempfile.mkdtemp()) / 'copilot.db'}")
    await database.upgrade()
    backend = TransformersBackend(model=args.model, data_dir=args.data_dir, max_queue=1000)
    await backend.load()
    kb = KnowledgeBase(repository=KnowledgeRepository(database), embedder=SentenceEmbedder())
    await kb.import_file(faq_jsonl(DATA))
    quoting = kb.policy
    desk = HelpDesk(
        settings=HandoffSettings(spaces=parse_spaces("slack:T1/C1"), signature="Team"),
        tickets=HandoffRepository(database),
    )
    manager = create_manager(
        repository=Repository(database),
        backend=backend,
        system_prompt=DEFAULT_SYSTEM_PROMPT,
        sampling=SamplingParams(max_new_tokens=200, temperature=0.0),
        llm_timeout=None,
        max_input_chars=4000,
        history_messages=10,
        knowledge=kb,
        desk=desk,
    )
    space = Space()
    worker = OutboxWorker(desk=desk, channels={"slack": space, "test": space}, interval=0.01)  # type: ignore[dict-item]
    worker.start()
    copilot = manager.copilot
    assert copilot is not None
    eval_set = load_eval_set(DATA)
    entries = await kb.repository.entries()
    n = 0

    async def say(text: str) -> float:
        nonlocal n
        n += 1
        ref = ConversationRef("test", "t1", "c1")
        inbound = Inbound(ref=ref, user="alice", text=text, event_id=f"m{n}", user_name="Alice")

        async def collect(reply: Reply) -> None:
            await reply.collect()

        started = time.perf_counter()
        await manager.handle(inbound, collect)
        return started

    print("handing off", flush=True)
    await say("/human")
    await space.arrival(0, "Ticket #", within=600)
    await asyncio.sleep(1.0)  # the notices of the handoff go out first

    streamed: list[float] = []
    first_text: list[float] = []

    async def round_trip(question: str, *, suggesting: bool = True) -> tuple[float, float | None]:
        print(f"  asking: {question[:60]}", flush=True)
        after, edits = len(space.posts), len(space.edits)
        started = await say(question)
        relayed = await space.arrival(after, f"Alice: {question}")
        suggested = None
        if suggesting:
            with contextlib.suppress(TimeoutError):
                suggested = await space.arrival(after, "Suggested reply #", within=300)
        await copilot.settle()
        placeholder = next((at for at, t in space.posts[after:] if "Drafting a" in t), None)
        if placeholder is not None:
            streamed.append(placeholder - started)
            # The first edit showing the model's words (not the bare cursor).
            shown = [
                at
                for at, t in space.edits[edits:]
                if "Drafting a" in t and t.split("\n\n", 1)[-1].strip(" ▍")
            ]
            if shown:
                first_text.append(shown[0] - started)
        return relayed - started, None if suggested is None else suggested - started

    quoted: list[float] = []
    written: list[float] = []
    relay_on: list[float] = []
    relay_off: list[float] = []
    ended: Counter[str] = Counter()
    for entry in entries[: args.rounds]:
        relay, suggested = await round_trip(entry.question)
        relay_on.append(relay)
        if suggested is not None:
            quoted.append(suggested)
    kb.policy = Policy(verbatim_score=1.01, grounded_score=quoting.grounded_score)
    written_rounds = args.rounds if args.written_rounds is None else args.written_rounds
    for _, question in eval_set.reworded[:written_rounds]:
        before = {s.id for s in await desk.tickets.suggestions.of_ticket(1)}
        relay, suggested = await round_trip(question)
        relay_on.append(relay)
        made = [s for s in await desk.tickets.suggestions.of_ticket(1) if s.id not in before]
        ended[made[0].path if made else "none"] += 1
        if suggested is not None and made:
            # The model was asked each time; a reply that failed the citation
            # check falls back to a quote or to "not covered", posted as late.
            written.append(suggested)
    kb.policy = quoting
    copilot.knowledge = None  # the copilot off: the relay alone
    for entry in entries[: args.rounds]:
        relay, _ = await round_trip(entry.question, suggesting=False)
        relay_off.append(relay)

    print(f"model: {args.model} on the CPU; FAQ entries: {len(entries)}")
    print(f"quoted suggestion posted:  {summary(quoted)}")
    print(f"model-drafted posted:      {summary(written)}")
    print(f"  streaming placeholder:   {summary(streamed)}")
    print(f"  first model text shown:  {summary(first_text)}")
    print(f"written rounds ended: {dict(ended)}")
    print(f"relay with suggestions:    {summary(relay_on)}")
    print(f"relay without:             {summary(relay_off)}")
    await worker.stop()
    await manager.aclose()
    await backend.aclose()
    await database.dispose()


if __name__ == "__main__":
    asyncio.run(main())
