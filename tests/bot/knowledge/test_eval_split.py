"""The evaluation halves, threshold selection and ``deskmate faq eval`` (model-free)."""

from __future__ import annotations

import io
from pathlib import Path

from bot.knowledge import evaluation
from bot.knowledge.cli import _eval
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.policy import Policy
from bot.settings import Settings
from llm.embeddings import HashingEmbedder
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository
from tests.support import FAQ_DATA


def test_the_stored_split_is_the_seeded_one_and_keeps_entries_apart() -> None:
    stored = (FAQ_DATA / evaluation.SPLIT_FILE).read_text(encoding="utf-8")
    halves = {
        line.split("\t")[0]: line.split("\t")[1]
        for line in stored.splitlines()
        if line and not line.startswith("#")
    }
    assert halves == evaluation.make_split(FAQ_DATA, seed=0)
    tune, test = (evaluation.load_half(FAQ_DATA, h) for h in evaluation.HALVES)
    full = evaluation.load_eval_set(FAQ_DATA)
    assert len(tune.reworded) + len(test.reworded) == len(full.reworded)
    assert len(tune.out_of_scope) + len(test.out_of_scope) == len(full.out_of_scope)
    # No entry, nor any entry of its duplicate group, is asked about in both halves.
    tuned = {x for e, _ in tune.reworded for x in full.accepted(e)}
    assert not tuned & {e for e, _ in test.reworded}
    assert abs(len(tune.reworded) - len(test.reworded)) <= 10


def test_the_recommended_threshold_keeps_the_precision_above_it() -> None:
    def s(conf: float, right: bool | None) -> evaluation.Scored:
        expected = frozenset() if right is None else frozenset({"a"})
        return evaluation.Scored("q", expected, ("a" if right else "b",), conf, 0.1, conf)

    scored = [s(0.9, True)] * 20 + [s(0.7, True)] * 9 + [s(0.7, False)] + [s(0.5, False)] * 5
    scored += [s(0.4, None)] * 19 + [s(0.6, None)]
    curve = evaluation.verbatim_curve(scored)
    assert evaluation.recommend_verbatim(curve, 0.97) == 0.71
    assert evaluation.recommend_verbatim(curve, 0.9) == 0.51  # 29 of 31 right above it
    assert evaluation.recommend_escalation(scored, 0.95) == 0.41
    # A score on a hundredth is placed under the threshold, not on it.
    assert evaluation.recommend_escalation([s(0.12, None), s(-0.05, None)], 1.0) == 0.13
    assert evaluation.recommend_escalation([s(-0.05, None)], 1.0) == -0.04


async def test_faq_eval_prints_the_curve_and_the_misses(
    repository: Repository, tmp_path: Path
) -> None:
    kb = KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
        background=(),
        policy=Policy(verbatim_score=0.5, grounded_score=0.25),
        refresh_interval=0.0,
    )
    faq = tmp_path / "faq.csv"
    faq.write_text(
        "id,question,answer\n"
        "ship-1,How long does shipping take?,Orders arrive in 2-3 working days.\n"
        "ret-1,Can I return an item?,Within 30 days.\n"
        "pay-1,Which payment methods do you accept?,Card and invoice.\n",
        encoding="utf-8",
    )
    await kb.import_file(faq)
    questions = tmp_path / "questions.csv"
    questions.write_text(
        "question,expected\n"
        "how long does shipping take,ship-1\n"
        "can I return an item,ret-1\n"
        "which payment methods,ship-1\n"
        "what is the capital of australia,\n",
        encoding="utf-8",
    )
    out, err = io.StringIO(), io.StringIO()
    assert await _eval(kb, questions, "", Settings(), out, err) == 0
    text = out.getvalue()
    assert "4 questions (3 in scope, 1 off-topic)" in text
    assert "threshold  verbatim  precision  coverage" in text
    assert "     0.50" in text and "     0.95" in text
    assert "recommended for precision 97%: DESKMATE_FAQ_VERBATIM_SCORE=" in text
    assert "refuses 1 of these 1 off-topic questions; expect about 50% of new ones" in text
    assert "miss: 'which payment methods' expected ['ship-1'] got ('pay-1'," in text
    assert await kb.repository.answers() == []  # nothing was logged
    assert "per language" not in text  # no language column


async def test_faq_eval_reports_each_language_of_a_language_column(
    repository: Repository, tmp_path: Path
) -> None:
    kb = KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
        background=(),
        policy=Policy(verbatim_score=0.5, verbatim_margin=0.0, grounded_score=0.25),
        refresh_interval=0.0,
    )
    faq = tmp_path / "faq.csv"
    faq.write_text(
        "id,question,answer\n"
        "ship-1,How long does shipping take?,Orders arrive in 2-3 working days.\n"
        "ret-1,Can I return an item?,Within 30 days.\n"
        "ship-sv,Hur lång är leveranstiden?,Två till tre arbetsdagar.\n",
        encoding="utf-8",
    )
    await kb.import_file(faq)
    questions = tmp_path / "questions.csv"
    questions.write_text(
        "question,expected,language\n"
        "how long does shipping take,ship-1,en\n"
        "can I return an item,ret-1,EN\n"
        "hur lång är leveranstiden,ship-sv,sv\n"
        "hur lång är leveranstiden,ret-1,sv\n"
        "vad är huvudstaden i australien,,sv\n",
        encoding="utf-8",
    )
    out, err = io.StringIO(), io.StringIO()
    assert await _eval(kb, questions, "", Settings(), out, err) == 0
    text = out.getvalue()
    assert "5 questions (4 in scope, 1 off-topic)" in text
    assert "per language, at the thresholds in force:" in text
    assert (
        "  en: 2 questions (2 in scope, 0 off-topic); right entry first 100.0%, among the "
        "first three 100.0%; right entry verbatim or offered 100.0%; 2 verbatim answers, "
        "0.0% wrong" in text
    )
    assert (
        "  sv: 3 questions (2 in scope, 1 off-topic); right entry first 50.0%, among the "
        "first three 100.0%" in text
    )
    assert "off-topic escalated 100.0%" in text.split("  sv: ")[1]
