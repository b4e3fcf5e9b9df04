"""FAQ entries in several languages: versions imported with ``--language``,
searched and quoted in the customer's language; cross-lingual retrieval with the
multilingual embedding model."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.policy import Policy, pair_scale
from bot.plans import Clarify, Verbatim
from llm.embeddings import E5Embedder, HashingEmbedder
from storage.faq_vectors import text_digest
from storage.faq_versions import FaqVersion
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository
from tests.bot.knowledge.test_rerank import Scripted

ENGLISH = (
    "id,question,answer,source\n"
    "ship-1,How long does shipping take?,Orders arrive in 2-3 working days.,Shipping policy\n"
    'ret-1,Can I return an item?,"Yes, within 30 days of delivery.",Returns policy\n'
    "pay-1,Which payment methods do you accept?,Card and invoice.,Payments page\n"
)
SWEDISH = (
    "id,question,answer\n"
    "ship-1,Hur lång är leveranstiden?,Beställningar kommer fram inom 2-3 arbetsdagar.\n"
    'ret-1,Kan jag returnera en vara?,"Ja, inom 30 dagar från leveransen."\n'
    "gone-9,Finns det presentkort?,Ja.\n"
)
POLICY = Policy(
    verbatim_score=0.5, verbatim_margin=0.05, grounded_score=0.25, fallback_verbatim_score=0.35
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
async def kb(repository: Repository) -> KnowledgeBase:
    return KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
        background=(),
        policy=POLICY,
        refresh_interval=0.0,
    )


async def test_versions_are_searched_and_quoted_in_the_customers_language(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    await kb.import_file(_write(tmp_path, "en.csv", ENGLISH))
    report = await kb.import_file(_write(tmp_path, "sv.csv", SWEDISH), language="sv")
    # Versions attach to the entries with the same ids; they are no entries of their own.
    assert (report.created, report.unchanged) == (2, 0)
    assert [str(issue) for issue in report.skipped] == [
        "line 4: no entry 'gone-9' to add a sv version to"
    ]
    assert len(await kb.repository.entries()) == 3
    versions = await kb.repository.versions()
    assert {(v.language, v.question) for v in versions} == {
        ("sv", "Hur lång är leveranstiden?"),
        ("sv", "Kan jag returnera en vara?"),
    }
    again = await kb.import_file(_write(tmp_path, "sv.csv", SWEDISH), language="sv")
    assert (again.created, again.unchanged) == (0, 2)

    # A Swedish question finds the entry through its Swedish version...
    plan = await kb.plan("Hur lång är leveranstiden?", tenant="", conversation_key="c1")
    assert isinstance(plan, Verbatim) and plan.passage.id == "ship-1"
    # ...and a Swedish customer is quoted the Swedish answer, under the entry's own id.
    assert "Orders arrive" in plan.text
    swedish = kb.in_versions(plan, "sv")
    assert swedish.passage.id == "ship-1" and swedish.passage.language == "sv"
    assert swedish.quoted.startswith("Beställningar kommer fram inom 2-3 arbetsdagar.")
    planned = await kb.plan(
        "Hur lång är leveranstiden?", tenant="", conversation_key="c1", language="sv"
    )
    assert isinstance(planned, Verbatim)
    assert planned.text.startswith("Beställningar kommer fram")
    # No version in that language: the original, after a line naming its language.
    english = await kb.plan(
        "Which payment methods do you accept?", tenant="", conversation_key="c1", language="sv"
    )
    assert isinstance(english, Verbatim)
    assert english.text.startswith("Det här svaret finns hittills bara på engelska:\n\nCard and")
    # Options of a "did you mean" are offered in the customer's language too.
    considered = await kb.consider("Kan jag returnera en vara?", tenant="", conversation_key="c1")
    assert considered.decision is not None
    offered = Clarify(considered.passages[:2], considered.decision)
    assert [p.title for p in offered.options] == [
        "Can I return an item?",
        "How long does shipping take?",
    ]
    assert [p.title for p in kb.in_versions(offered, "sv").options] == [
        "Kan jag returnera en vara?",
        "Hur lång är leveranstiden?",
    ]

    # Removing an entry removes its versions with it.
    await kb.remove("ret-1")
    assert [v.question for v in await kb.repository.versions()] == ["Hur lång är leveranstiden?"]


def test_a_version_is_embedded_like_an_entry() -> None:
    version = FaqVersion(1, 1, "sv", "Fråga?", "Svar.", ("Annan fråga?",))
    from bot.knowledge.index import entry_texts

    assert entry_texts(version) == ["Fråga?", "Annan fråga?", "Fråga? Svar."]


@pytest.mark.model
async def test_cross_lingual_retrieval_with_the_multilingual_model(
    sqlite_repository: Repository, tmp_path: Path
) -> None:
    embedder = E5Embedder()
    kb = KnowledgeBase(
        repository=KnowledgeRepository(sqlite_repository.db),
        embedder=embedder,
        policy=Policy.for_model(embedder.name),
        refresh_interval=0.0,
    )
    await kb.import_file(_write(tmp_path, "en.csv", ENGLISH))
    for question, expected in [
        ("我的包裹多久能送到？", "ship-1"),
        ("可以用什么方式付款？", "pay-1"),
        ("kan jag skicka tillbaka en tröja jag köpt?", "ret-1"),
        ("Wie lange dauert der Versand?", "ship-1"),
    ]:
        hits = await kb.search(question, limit=1)
        assert hits[0].id == expected, question


async def test_the_multilingual_model_is_chosen_by_name_with_its_own_thresholds(
    tmp_path: Path,
) -> None:
    from bot.app import create_knowledge_base
    from bot.errors import ConfigError
    from bot.knowledge.policy import MULTILINGUAL_SCALE
    from bot.settings import Settings
    from storage.db import Database

    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    settings = Settings.from_env({"DESKMATE_EMBEDDING_MODEL": "multilingual"})
    kb = create_knowledge_base(db, settings, Scripted())  # type: ignore[arg-type]
    assert isinstance(kb.retriever.base_embedder, E5Embedder)
    # The English-centric re-ranker is left out for customers of every language.
    assert kb.retriever.reranker is None
    english = create_knowledge_base(db, Settings(), Scripted())  # type: ignore[arg-type]
    assert english.retriever.reranker is not None
    assert kb.policy.verbatim_score == MULTILINGUAL_SCALE.verbatim_score
    assert kb.policy.grounded_score == MULTILINGUAL_SCALE.grounded_score
    assert kb.policy.fallback_verbatim_score == MULTILINGUAL_SCALE.fallback_verbatim_score
    # A threshold set by the operator wins over the model's.
    settings = Settings.from_env(
        {
            "DESKMATE_EMBEDDING_MODEL": "multilingual-e5-small-q4",
            "DESKMATE_FAQ_VERBATIM_SCORE": "0.97",
        }
    )
    assert create_knowledge_base(db, settings).policy.verbatim_score == 0.97
    await db.dispose()
    with pytest.raises(
        ConfigError, match="nor one of auto, all-MiniLM-L6-v2, multilingual-e5-small-q4"
    ):
        Settings.from_env({"DESKMATE_EMBEDDING_MODEL": str(tmp_path / "no-such-model")})


async def test_auto_answers_english_with_the_english_model_and_the_rest_with_the_other(
    repository: Repository, tmp_path: Path
) -> None:
    english, other = HashingEmbedder(), HashingEmbedder(dim=256)
    kb = KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=english,
        crosslingual=other,
        background=(),
        policy=POLICY,
        refresh_interval=0.0,
    )
    report = await kb.import_file(_write(tmp_path, "en.csv", ENGLISH))
    assert report.language == "en" and "written in en" in report.lines()[0]
    assert kb.crosslingual is not None
    # The import embedded the entries with the second model too, kept beside the
    # entries' own vectors (which stay the English model's).
    digests = [text_digest(f"{other.name}\n{t}") for t in ("How long does shipping take?",)]
    assert set(await kb.repository.text_vectors(other.name, digests)) == set(digests)
    assert {e.embedding_model for e in await kb.repository.entries()} == {english.name}
    await kb.retriever.refresh()
    assert kb.retriever.languages("") == ("en", frozenset())
    assert await kb.faq.pair("How long does shipping take?", "") is None
    assert await kb.faq.pair("Hur lång är leveranstiden för paket?", "") == ("sv", "en")
    assert await kb.faq.pair("运送需要多长时间？", "") == ("zh", "en")
    # A Swedish version of most entries makes Swedish the FAQ's own language too.
    await kb.import_file(_write(tmp_path, "sv.csv", SWEDISH), language="sv")
    assert await kb.faq.pair("Hur lång är leveranstiden för paket?", "") == ("sv", "sv")
    # Shifted onto the policy's scale by the pair's thresholds: an exact question
    # in another language than English is still found.
    found = await kb.faq.lookup("Hur lång är leveranstiden?", tenant="", limit=3)
    assert found.passages[0].id == "ship-1"
    scale = pair_scale("sv", "sv")
    raw = await kb.crosslingual.lookup(
        "Hur lång är leveranstiden?", limit=3, qa_weight=scale.qa_weight
    )
    assert found.passages[0].dense == pytest.approx(
        raw.hits[0].dense + POLICY.verbatim_score - scale.verbatim_score
    )
    assert found.scope == pytest.approx(raw.scope + POLICY.grounded_score - scale.grounded_score)
    # A removed entry's texts leave no vector behind.
    paid = [text_digest(f"{other.name}\nWhich payment methods do you accept?")]
    assert await kb.repository.text_vectors(other.name, paid)
    await kb.remove("pay-1")
    await kb.crosslingual.refresh()
    assert not await kb.repository.text_vectors(other.name, paid)
    assert await kb.repository.text_vectors(other.name, digests)


async def test_an_faq_in_another_language_is_not_adapted_on_import(tmp_path: Path) -> None:
    import argparse
    import io

    from bot.knowledge.cli import register, run
    from bot.settings import Settings

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    settings = Settings.from_env({"DESKMATE_DATA_DIR": str(tmp_path / "data")})
    out, err = io.StringIO(), io.StringIO()
    words = ["faq", "import", str(_write(tmp_path, "sv.csv", SWEDISH))]
    assert await run(parser.parse_args(words), settings, stdout=out, stderr=err) == 0
    assert "written in sv" in out.getvalue()
    assert "not adapted: the FAQ is written in sv" in err.getvalue()


async def test_faq_import_language_through_the_command_line(tmp_path: Path) -> None:
    import argparse
    import io

    from bot.knowledge.cli import register, run
    from bot.settings import Settings

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    settings = Settings.from_env(
        {"DESKMATE_DATA_DIR": str(tmp_path / "data"), "DESKMATE_EMBEDDING_MODEL": "multilingual"}
    )
    english, swedish = _write(tmp_path, "en.csv", ENGLISH), _write(tmp_path, "sv.csv", SWEDISH)

    async def faq(*words: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = await run(parser.parse_args(["faq", *words]), settings, stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    code, _, err = await faq("import", str(swedish), "--language", "swedish!")
    assert code == 1 and "--language takes a language code such as sv" in err
    code, out, _ = await faq("import", str(english), "--no-tune")
    assert code == 0 and "3 added" in out
    code, out, err = await faq("import", str(swedish), "--language", "SV")
    assert code == 0 and "2 added, 0 updated, 0 unchanged, 1 skipped" in out
    assert "skipped line 4: no entry 'gone-9' to add a sv version to" in err
    # The multilingual model cannot be adapted; the import says what stands in for it.
    assert "the embedding model was not adapted" in err and "did you mean" in err


def test_each_language_pair_has_its_thresholds() -> None:
    same, cross = pair_scale("sv", "sv"), pair_scale("zh", "en")
    assert pair_scale("de", "de") == same and pair_scale("fr", "sv") == cross
    # Off-topic questions in the entries' own language score higher than real
    # questions asked across languages: the first need the stricter scope.
    assert same.grounded_score > cross.grounded_score
    # Words are shared within a language only.
    assert same.keyword_weight > 0 and cross.keyword_weight == 0


async def test_a_purged_workspace_leaves_no_multilingual_vectors(
    repository: Repository, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from storage.slack_repo import SlackRepository, TokenCipher
    from tests.storage.test_slack_repo import KEY, install

    other = HashingEmbedder(dim=256)
    kb = KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
        crosslingual=other,
        background=(),
        policy=POLICY,
        refresh_interval=0.0,
    )
    # T1 and T2 share one question word for word; T1 has a Swedish version too.
    header, shipping, *_ = ENGLISH.splitlines()
    own = "own-1,Do you deliver to Iceland?,Yes.,Shipping policy\n"
    await kb.import_file(_write(tmp_path, "t1.csv", ENGLISH + own), tenant="T1")
    await kb.import_file(_write(tmp_path, "t1-sv.csv", SWEDISH), tenant="T1", language="sv")
    await kb.import_file(_write(tmp_path, "t2.csv", f"{header}\n{shipping}\n"), tenant="T2")

    def key(text: str) -> str:
        return text_digest(f"{other.name}\n{text}")

    only_t1 = [
        key("Do you deliver to Iceland?"),
        key("Do you deliver to Iceland? Yes."),
        key("Hur lång är leveranstiden?"),
        key("Can I return an item? Yes, within 30 days of delivery."),
    ]
    shared = [key("How long does shipping take?")]
    stored = await kb.repository.text_vectors(other.name, only_t1 + shared)
    assert set(stored) == set(only_t1 + shared)
    slack = SlackRepository(repository.db, TokenCipher(KEY))
    await slack.save_installation(install("T1", "xoxb-one"))
    assert await slack.delete_installation(enterprise_id=None, team_id="T1") == ["T1"]
    assert await slack.purge_workspace("T1", datetime.now(UTC)) is not None
    # Gone with the purge, not at the next rebuild; T2's identical text stays.
    assert await kb.repository.text_vectors(other.name, only_t1) == {}
    assert set(await kb.repository.text_vectors(other.name, shared)) == set(shared)


async def test_missing_multilingual_vectors_are_filled_outside_any_question(
    repository: Repository, tmp_path: Path
) -> None:
    from sqlalchemy import delete

    from storage.faq_vectors import faq_text_vectors

    def knowledge_base(other: HashingEmbedder) -> KnowledgeBase:
        return KnowledgeBase(
            repository=KnowledgeRepository(repository.db),
            embedder=HashingEmbedder(),
            crosslingual=other,
            background=(),
            policy=POLICY,
            refresh_interval=0.0,
        )

    other = HashingEmbedder(dim=256)
    await knowledge_base(other).import_file(_write(tmp_path, "en.csv", ENGLISH))
    # As after an upgrade from a version that kept no such vectors.
    await repository.db.run(lambda c: c.execute(delete(faq_text_vectors)))
    kb = knowledge_base(other)  # a process that starts
    assert await kb.fill_text_vectors() == 3 * 2  # each entry's question and q + a
    digests = [text_digest(f"{other.name}\nCan I return an item?")]
    assert await kb.repository.text_vectors(other.name, digests)
    assert await kb.fill_text_vectors() == 0
    assert kb.crosslingual is not None
    await kb.faq.lookup("Kan jag returnera en vara?", tenant="", limit=3)
    assert kb.crosslingual.texts_embedded == 6, "the question embedded no FAQ text"
    # A later process finds them stored and embeds nothing.
    assert await knowledge_base(other).fill_text_vectors() == 0
    # Without a multilingual model there is nothing to fill.
    plain = KnowledgeBase(
        repository=KnowledgeRepository(repository.db), embedder=HashingEmbedder(), background=()
    )
    assert await plain.fill_text_vectors() == 0
