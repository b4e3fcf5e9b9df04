"""Retrieval quality on a real FAQ with the real embedding model.

503-entry Swedish construction FAQ (CC BY 4.0, tests/data/faq/SOURCE.md),
162 reworded questions written without looking at retrieval output, and 50
out-of-scope questions. Measured with the default ``Policy`` (see
bench/README.md for the full table, and for the held-out half the
thresholds were not chosen on):

    top-1 (duplicate groups accepted)  83.3 %   (strict id: 77.8 %)
    top-3                              93.8 %
    verbatim answers that are right    98.8 %   (51 % of questions answered verbatim,
                                                 48 % "did you mean", 0.6 % escalated)
    out-of-scope escalated            100.0 %

After ``deskmate faq tune`` (the model adapted to these 503 entries, seed 0):

    top-1                              89.5 %   (seeds 1 and 2: 85.8 %, 86.4 %)
    top-3                              97.5 %
    verbatim answers that are right    97.2 %
    out-of-scope escalated            100.0 %   (judged with the base model's scores)

With close calls re-ranked by the embedded model (``bot.knowledge.rerank``,
what a bot on the default model does), the same adapted model:

    top-1                              92.6 %
    top-3                              97.5 %
    verbatim answers that are right    98.6 %
    out-of-scope escalated            100.0 %

The floors below sit a little under those figures; a change that loses
retrieval quality fails here. The adapted model's floors allow for the
spread between seeds: a CPU with other matrix kernels trains a slightly
different model from the same seed.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bot.knowledge import tuning
from bot.knowledge.evaluation import evaluate, faq_jsonl, load_eval_set
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.rerank import LikelihoodReranker
from storage.db import Database
from storage.knowledge_repo import KnowledgeRepository
from tests.support import FAQ_DATA

pytestmark = pytest.mark.model

TOP1_FLOOR = 0.82
TOP3_FLOOR = 0.92
VERBATIM_PRECISION_FLOOR = 0.97
REFUSAL_FLOOR = 0.96
TUNED_TOP1_FLOOR = 0.85
TUNED_TOP3_FLOOR = 0.95
TUNED_VERBATIM_PRECISION_FLOOR = 0.95
TUNED_REFUSAL_FLOOR = 0.94
RERANKED_TOP1_FLOOR = 0.89
# Escalating everything would refuse every off-topic question: in-scope ones must not be.
ESCALATED_CEILING = 0.03


def _opened(folder: Path) -> tuple[KnowledgeBase, Database]:
    from llm.embeddings import SentenceEmbedder

    database = Database(f"sqlite:///{folder / 'kb.db'}")
    kb = KnowledgeBase(
        repository=KnowledgeRepository(database),
        embedder=SentenceEmbedder(),
        model_store=folder / "embeddings",
    )
    return kb, database


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def imported(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[KnowledgeBase, Path]]:
    """The FAQ imported once with the base model: its knowledge base and folder."""
    folder = tmp_path_factory.mktemp("kb")
    kb, database = _opened(folder)
    await database.upgrade()
    report = await kb.import_file(faq_jsonl(FAQ_DATA))
    assert (report.created, len(report.skipped)) == (503, 0)
    yield kb, folder
    await database.dispose()


@pytest.fixture
def kb(imported: tuple[KnowledgeBase, Path]) -> KnowledgeBase:
    return imported[0]


def _copy(imported: tuple[KnowledgeBase, Path], folder: Path) -> tuple[KnowledgeBase, Database]:
    """A knowledge base of its own on a copy of the imported database (what the
    write-ahead log holds included): the entries and vectors, not embedded again."""
    source, target = imported[1] / "kb.db", folder / "kb.db"
    with (
        contextlib.closing(sqlite3.connect(source)) as reading,
        contextlib.closing(sqlite3.connect(target)) as writing,
    ):
        reading.backup(writing)
    return _opened(folder)


@pytest.mark.asyncio(loop_scope="module")
async def test_reworded_questions_find_their_entry(kb: KnowledgeBase) -> None:
    result = await evaluate(kb, load_eval_set(FAQ_DATA))
    summary = result.summary()
    print(summary)
    assert result.questions == 162 and result.out_of_scope == 50
    assert result.top1_rate >= TOP1_FLOOR, result.misses
    assert result.top3_rate >= TOP3_FLOOR
    assert result.verbatim_precision >= VERBATIM_PRECISION_FLOOR
    assert result.refusal_rate >= REFUSAL_FLOOR
    assert result.paths["escalated"] / result.questions <= ESCALATED_CEILING


@pytest.mark.asyncio(loop_scope="module")
async def test_adapting_the_model_to_the_faq_finds_more(
    imported: tuple[KnowledgeBase, Path], tmp_path: Path, model_data_dir: Path
) -> None:
    from llm.transformers import TransformersBackend

    kb, database = _copy(imported, tmp_path)
    assert len(await kb.repository.entries(with_embeddings=True)) == 503
    backend = TransformersBackend(data_dir=model_data_dir)
    try:
        await tuning.tune(kb)
        result = await evaluate(kb, load_eval_set(FAQ_DATA))
        # What a bot on the embedded model does: close calls re-ranked by it.
        await backend.load()
        kb.retriever.reranker = LikelihoodReranker(backend)
        reranked = await evaluate(kb, load_eval_set(FAQ_DATA))
    finally:
        await backend.aclose()
        await database.dispose()
    print(result.summary(), reranked.summary(), kb.retriever.reranker.reranked)
    assert result.top1_rate >= TUNED_TOP1_FLOOR, result.misses
    assert result.top3_rate >= TUNED_TOP3_FLOOR
    assert result.verbatim_precision >= TUNED_VERBATIM_PRECISION_FLOOR
    assert result.refusal_rate >= TUNED_REFUSAL_FLOOR
    assert result.paths["escalated"] / result.questions <= ESCALATED_CEILING
    assert reranked.top1_rate >= RERANKED_TOP1_FLOOR, reranked.misses
    assert reranked.top3_rate >= TUNED_TOP3_FLOOR
    assert reranked.verbatim_precision >= TUNED_VERBATIM_PRECISION_FLOOR
    assert reranked.refusal_rate >= TUNED_REFUSAL_FLOOR
