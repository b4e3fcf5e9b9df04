"""``deskmate faq tune``: adapting the embedding model to the knowledge base.

Real model, real training (one short epoch on a slice of the evaluation FAQ),
on SQLite and PostgreSQL; the retrieval gain itself is measured on the whole
FAQ in ``test_retrieval_quality``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.knowledge import tuning
from bot.knowledge.evaluation import faq_jsonl
from bot.knowledge.importer import ParsedRow, ParseResult
from bot.knowledge.knowledge_base import KnowledgeBase
from llm import embeddings
from llm.embeddings import BASE_MODEL_NAME, HashingEmbedder, SentenceEmbedder
from storage.knowledge_repo import (
    DEPLOYMENT,
    EMBEDDING_MODEL_SETTING,
    EntryInput,
    KnowledgeRepository,
)
from storage.repository import Repository
from tests.support import FAQ_DATA

pytestmark = pytest.mark.model


def _faq(count: int) -> ParseResult:
    lines = faq_jsonl(FAQ_DATA).read_text(encoding="utf-8").splitlines()[:count]
    rows = []
    for number, line in enumerate(lines, start=1):
        item = json.loads(line)
        entry = EntryInput(
            question=item["q"],
            answer=item["a"],
            source="; ".join(item["sources"]),
            external_id=item["id"],
        )
        rows.append(ParsedRow(number, entry))
    return ParseResult(rows=rows, issues=[])


def _kb(repository: Repository, store: Path) -> KnowledgeBase:
    return KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=SentenceEmbedder(),
        model_store=store,
        refresh_interval=0.0,
    )


async def _models(kb: KnowledgeBase) -> set[str | None]:
    return {e.embedding_model for e in await kb.repository.entries(with_embeddings=True)}


async def test_tune_switches_every_process_to_the_adapted_model(
    repository: Repository, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "embeddings"
    kb = _kb(repository, store)
    await kb.store(_faq(24))
    await kb.add(
        EntryInput(question="Where is the Oslo office?", answer="Storgata 1."), tenant="t1"
    )
    other = _kb(repository, store)  # a second bot process on the same database
    assert {h.ref for h in await other.search("building permit")}
    assert other.retriever.embedder.name == BASE_MODEL_NAME

    steps: list[tuple[int, int]] = []
    report = await tuning.tune(kb, epochs=1, progress=lambda d, t: steps.append((d, t)))
    assert report.entries == 24 and report.embedded == 25 and report.seconds > 0
    assert report.folder == store / report.model and (store / report.model).is_dir()
    assert report.model.startswith(f"{BASE_MODEL_NAME}-kb-")
    assert steps and steps[-1] == (1, 1)  # 24 pairs: one batch
    stored = await kb.repository.get_setting(DEPLOYMENT, EMBEDDING_MODEL_SETTING)
    assert stored == report.model
    assert await _models(kb) == {report.model}

    hits = await other.search("how long until the council decides on my permit?")
    assert other.retriever.embedder.name == report.model
    assert hits[0].ref == "bygglov-002"

    # The same entries and settings give the same model: nothing is trained again.
    again = await tuning.tune(kb, epochs=1)
    assert again.model == report.model and again.seconds == 0.0

    # A process whose data dir lacks the folder searches with the base model
    # and leaves the stored vectors alone.
    elsewhere = _kb(repository, tmp_path / "empty")
    with caplog.at_level(logging.ERROR, logger="bot.knowledge.retrieval"):
        assert await elsewhere.search("building permit")
    assert elsewhere.retriever.embedder.name == BASE_MODEL_NAME
    assert "does not exist" in caplog.text and report.model in caplog.text
    assert await _models(kb) == {report.model}

    back = await tuning.reset(kb)
    assert back.model == BASE_MODEL_NAME and back.embedded == 25
    assert await kb.repository.get_setting(DEPLOYMENT, EMBEDDING_MODEL_SETTING) is None
    assert await _models(kb) == {BASE_MODEL_NAME}
    await other.search("building permit")
    assert other.retriever.embedder.name == BASE_MODEL_NAME
    # The process no longer keeps the adapted model it switched away from.
    assert report.model not in {e.name for e in embeddings._shared.values()}


async def test_tune_refuses_what_it_cannot_do(repository: Repository, tmp_path: Path) -> None:
    kb = _kb(repository, tmp_path / "embeddings")
    await kb.store(_faq(5))
    with pytest.raises(ConfigError, match=r"has 5 deployment-wide entries.*at least 20"):
        await tuning.tune(kb)
    with pytest.raises(ConfigError, match="at least 1"):
        await tuning.tune(kb, epochs=0)
    hashing = KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
        background=(),
        model_store=tmp_path,
    )
    with pytest.raises(ConfigError, match="cannot be adapted"):
        await tuning.tune(hashing)


def test_adapt_counts_only_the_batches_it_trains(tmp_path: Path) -> None:
    from llm.embeddings import adapt, default_model_dir

    lines = faq_jsonl(FAQ_DATA).read_text(encoding="utf-8").splitlines()[:33]
    items = [json.loads(line) for line in lines]
    # 33 entries: one batch of 32, and a lone entry that has no negatives to learn from.
    entries = [((i["q"], f"{i['q']} (asked differently)"), i["a"]) for i in items]
    steps: list[tuple[int, int]] = []
    seconds = adapt(
        default_model_dir(), entries, tmp_path / "m", epochs=2, progress=lambda *s: steps.append(s)
    )
    assert steps == [(1, 2), (2, 2)] and seconds > 0
    assert (tmp_path / "m").is_dir() and not list(tmp_path.glob(".m.*"))
    with pytest.raises(ValueError, match="at least two"):
        adapt(default_model_dir(), entries[:1], tmp_path / "n")


def _narrow_model(folder: Path) -> Path:
    """The shipped model with a projection to 128 dimensions: another vector width,
    so a wrong width assumed anywhere shows."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    base = SentenceTransformer(
        str(embeddings.default_model_dir()), device="cpu", local_files_only=True
    )
    projection = Dense(384, 128, bias=False)
    model = SentenceTransformer(modules=[*base, projection, Normalize()], device="cpu")
    model.save(str(folder))
    return folder


async def test_an_operator_chosen_model_replaces_the_shipped_one(
    repository: Repository, tmp_path: Path
) -> None:
    from bot.app import create_knowledge_base as knowledge_base
    from bot.settings import Settings

    folder = _narrow_model(tmp_path / "narrow-model")
    settings = Settings.from_env(
        {"DESKMATE_EMBEDDING_MODEL": str(folder), "DESKMATE_DATA_DIR": str(tmp_path)}
    )
    kb = knowledge_base(repository.db, settings)
    name = embeddings.configured_model_name(folder)
    assert kb.retriever.embedder.name == name and name.startswith("narrow-model-")
    await kb.store(_faq(24))
    assert await _models(kb) == {name}
    blob = (await kb.repository.entries(with_embeddings=True))[0].embedding
    assert blob is not None and len(blob) % (128 * 4) == 0 and len(blob) % (384 * 4) != 0

    # A new process: nothing to re-embed, the width comes from the model itself.
    embeddings.release_embedder(kb.retriever.embedder)
    restarted = knowledge_base(repository.db, settings)
    hits = await restarted.search("Do I need a permit to build a house?")
    assert hits and restarted.retriever.embedder.dim == 128
    assert await _models(restarted) == {name}

    # Back to the shipped model: every entry is embedded again with it.
    shipped = knowledge_base(repository.db, Settings.from_env({}))
    assert await shipped.search("Do I need a permit to build a house?")
    assert await _models(shipped) == {BASE_MODEL_NAME}
