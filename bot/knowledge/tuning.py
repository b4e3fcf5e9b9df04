"""``deskmate faq tune``: adapt the embedding model to this knowledge base.

The base sentence model knows general English, not a company's vocabulary:
its product names, terms of art, abbreviations and the plain words customers
use for them. Fine-tuning it on the knowledge base's own question/answer
pairs teaches it that (bench/README.md has the measured gain). The adapted
model is a folder under ``<data_dir>/embeddings/`` named after a digest of
what it was trained on; switching to it re-embeds every entry and records the
model's name in the database in one transaction, and every process's
``KnowledgeBase`` follows on its next refresh.

Only deployment-wide entries are trained on: a tenant's own entries must not
shape the model that answers other tenants.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ConfigError
from bot.knowledge.index import embed_entries
from bot.knowledge.knowledge_base import KnowledgeBase
from llm.embeddings import (
    ADAPT_EPOCHS,
    Embedder,
    SentenceEmbedder,
    adapt,
    adapted_name,
    shared_embedder,
)
from storage.knowledge_repo import DEPLOYMENT, EMBEDDING_MODEL_SETTING, GLOBAL

log = logging.getLogger(__name__)

# Fewer entries than this give the model too little to learn from, and too
# few in-batch negatives: it would only learn to tell a handful apart.
MIN_ENTRIES = 20


@dataclass(frozen=True, slots=True)
class TuneReport:
    model: str
    entries: int  # entries trained on
    embedded: int  # entries re-embedded with the model
    seconds: float  # training time; 0 when an identical model already existed
    folder: Path | None

    def line(self) -> str:
        if self.folder is None:
            return f"back to the base model {self.model}; {self.embedded} entries re-embedded"
        trained = (
            f"trained on {self.entries} entries in {self.seconds:.0f} s"
            if self.seconds
            else f"already trained on these {self.entries} entries"
        )
        return (
            f"embedding model {self.model} ({trained}); {self.embedded} entries re-embedded; "
            f"stored in {self.folder}"
        )


async def tune(
    kb: KnowledgeBase,
    *,
    epochs: int = ADAPT_EPOCHS,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> TuneReport:
    """Adapt the base model to the deployment-wide entries and switch to it."""
    base = kb.retriever.base_embedder
    if not isinstance(base, SentenceEmbedder):
        raise ConfigError(
            f"the embedding model {base.name} cannot be adapted (it is not a "
            "sentence-transformers model); wordings customers choose among the "
            '"did you mean" options still teach it the knowledge base\'s vocabulary'
        )
    if kb.retriever.model_store is None:
        raise ConfigError("no folder for adapted models is configured (DESKMATE_DATA_DIR)")
    if epochs < 1:
        raise ConfigError("--epochs must be at least 1")
    entries = await kb.repository.entries(tenant=GLOBAL)
    # Wordings customers confirmed count as phrasings too, once shared with every
    # tenant: a tenant's own stay out of the model all tenants use.
    learned: dict[int, list[str]] = {}
    for phrasing in await kb.repository.phrasings(tenant=GLOBAL):
        learned.setdefault(phrasing.entry_id, []).append(phrasing.text)
    # Sorted, so that the same entries give the same model whatever order the database returns.
    training = sorted(
        ((e.question, *e.alternatives, *sorted(learned.get(e.id, ()))), e.answer) for e in entries
    )
    if len(entries) < MIN_ENTRIES:
        raise ConfigError(
            f"the knowledge base has {len(entries)} deployment-wide entries; adapting the "
            f"embedding model needs at least {MIN_ENTRIES}"
        )
    name = adapted_name(base.name, training, epochs=epochs, seed=seed)
    folder = kb.retriever.model_store / name
    seconds = 0.0
    if not folder.is_dir():
        log.info("adapting %s to %d entries (%d epochs)", base.name, len(entries), epochs)
        seconds = await asyncio.to_thread(
            adapt, base.model_dir, training, folder, epochs=epochs, seed=seed, progress=progress
        )
    embedder = shared_embedder(model_dir=folder)
    embedded = await _switch(kb, embedder, name)
    return TuneReport(name, len(entries), embedded, seconds, folder)


async def reset(kb: KnowledgeBase) -> TuneReport:
    """Go back to the base model (adapted folders are left where they are)."""
    base = kb.retriever.base_embedder
    embedded = await _switch(kb, base, base.name)
    await kb.repository.set_setting(DEPLOYMENT, EMBEDDING_MODEL_SETTING, None)
    return TuneReport(base.name, 0, embedded, 0.0, None)


async def _switch(kb: KnowledgeBase, embedder: Embedder, name: str) -> int:
    entries = await kb.repository.entries(with_embeddings=False)
    blobs = await asyncio.to_thread(embed_entries, embedder, entries)
    vectors = dict(zip((e.id for e in entries), blobs, strict=True))
    await kb.repository.use_embedding_model(vectors, name)
    kb.retriever.invalidate()
    return len(entries)


# Seconds after the last shared-entry edit in chat before the model is adapted.
ADAPT_DELAY = 120.0


class BackgroundTuner:
    """Adapts the embedding model after edits in chat, without blocking answers.

    ``schedule`` (re)starts a countdown: several ``/faq add`` in a row train
    once, ``delay`` s after the last. Answers use the current model meanwhile;
    ``tune`` switches every process over once the new vectors are stored.
    """

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        self.task: asyncio.Task[None] | None = None
        self._due = 0.0

    def can_adapt(self) -> bool:
        retriever = self.kb.retriever
        return (
            isinstance(retriever.base_embedder, SentenceEmbedder)
            and retriever.model_store is not None
        )

    def schedule(self, delay: float = ADAPT_DELAY) -> bool:
        """False when this embedding model cannot be adapted."""
        if not self.can_adapt():
            return False
        self._due = time.monotonic() + delay
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._when_due())
        return True

    async def _when_due(self) -> None:
        # Each further edit moves the time on.
        while True:
            wait = self._due - time.monotonic()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        shown = -1

        def progress(done: int, total: int) -> None:
            nonlocal shown
            pct = 100 if not total else done * 100 // total
            if pct // 25 != shown // 25:
                log.info("adapting the embedding model: %d/%d", done, total)
            shown = pct

        try:
            outcome = await tune(self.kb, progress=progress)
            log.info("%s", outcome.line())
        except ConfigError as exc:
            log.info("the embedding model was not adapted: %s", exc)
        except Exception:
            # Retrieval goes on with the current model; the next edit tries again.
            log.exception("adapting the embedding model failed")
