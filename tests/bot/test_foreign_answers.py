"""A verbatim answer with no version in the customer's language: quoted with
a line saying its language, or translated by the model and marked as a
machine translation with the original below (``DESKMATE_FOREIGN_ANSWERS``),
through the manager with real storage and the scripted fake model."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.foreign_answers import faithful, resolve_mode
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.passages import Passage
from bot.knowledge.policy import Decision
from bot.messages import say
from bot.plans import Verbatim, in_language
from bot.settings import Settings
from llm.fake import FakeBackend
from storage.repository import Repository
from tests.bot.test_languages import ask, kb_for
from tests.conftest import make_manager

QUESTION = "How long does a building permit take?"
# The FAQ is Swedish; this entry's question was written for English readers.
SWEDISH = (
    "Lagstadgad handläggningstid är 10 veckor, med möjlig förlängning till 20 veckor vid "
    "komplexa ärenden. I Helsingborg hanteras bygglov av Stadsbyggnadsförvaltningen."
)
ENGLISH = (
    "The statutory processing time is 10 weeks, with a possible extension to 20 weeks for "
    "complex cases. In Helsingborg, building permits are handled by the city planning office."
)


async def swedish_kb(repository: Repository, tmp_path: Path) -> KnowledgeBase:
    kb = kb_for(repository)
    path = tmp_path / "faq.csv"
    path.write_text(f'id,question,answer\npermit,{QUESTION},"{SWEDISH}"\n', encoding="utf-8")
    await kb.import_file(path)
    return kb


async def test_quoted_with_one_line_in_the_customers_language(
    repository: Repository, backend: FakeBackend, tmp_path: Path
) -> None:
    manager = make_manager(repository, backend, knowledge=await swedish_kb(repository, tmp_path))
    text = await ask(manager, QUESTION)
    assert text.startswith("This answer is only written in Swedish so far:\n\n" + SWEDISH)
    assert backend.requests == []
    # A "did you mean" option chosen (its button sends /answer) is quoted the same way.
    chosen = await ask(manager, "/answer permit")
    assert chosen.startswith("This answer is only written in Swedish so far:\n\n" + SWEDISH)
    # In Chinese, the line and the language's name are Chinese.
    passage = Passage(kind="faq", id="permit", title=QUESTION, text=SWEDISH)
    plan = in_language(Verbatim(passage, Decision("verbatim", (passage,), 0.9, 0.5, ""), ""), "zh")
    assert plan.text.startswith("这条回答目前只有瑞典语版本：\n\n" + SWEDISH)
    # A Swedish customer gets it as it is.
    assert in_language(plan, "sv").text.startswith(SWEDISH)


async def test_translated_and_marked_with_the_original_below(
    repository: Repository, backend: FakeBackend, tmp_path: Path
) -> None:
    kb = await swedish_kb(repository, tmp_path)
    manager = make_manager(repository, backend, knowledge=kb, foreign_answers="translate")
    backend.enqueue(ENGLISH)
    text = await ask(manager, QUESTION)
    assert text.startswith(
        f"Machine translation from Swedish:\n{ENGLISH}\n\nThe original (Swedish):"
    )
    assert SWEDISH in text
    system = backend.requests[-1].messages[0].content
    assert "from Swedish into English" in system
    assert backend.requests[-1].messages[-1].content == SWEDISH


@pytest.mark.parametrize(
    "translation",
    [
        # A number of the original is lost.
        ENGLISH.replace("20 weeks", "twenty weeks"),
        # Not English.
        "Die gesetzliche Bearbeitungszeit beträgt 10 Wochen, bei komplexen Fällen bis zu 20 "
        "Wochen. In Helsingborg ist das Stadtplanungsamt zuständig.",
        # Nothing.
        "",
    ],
)
async def test_a_translation_that_fails_its_checks_gives_the_quote(
    repository: Repository, backend: FakeBackend, tmp_path: Path, translation: str
) -> None:
    kb = await swedish_kb(repository, tmp_path)
    manager = make_manager(repository, backend, knowledge=kb, foreign_answers="translate")
    backend.enqueue(translation)
    text = await ask(manager, QUESTION)
    quoted = say("foreign.quoted", "en", language="Swedish")
    assert text.startswith(f"{quoted}\n\n{SWEDISH}")
    assert "Machine translation" not in text


async def test_a_failed_model_gives_the_quote(
    repository: Repository, backend: FakeBackend, tmp_path: Path
) -> None:
    kb = await swedish_kb(repository, tmp_path)
    manager = make_manager(repository, backend, knowledge=kb, foreign_answers="translate")
    backend.enqueue(error=RuntimeError("model down"))
    text = await ask(manager, QUESTION)
    assert text.startswith("This answer is only written in Swedish so far:")


def test_the_checks_of_a_translation() -> None:
    assert faithful(SWEDISH, ENGLISH, "en")
    assert not faithful(SWEDISH, ENGLISH, "zh")
    chinese = "法定处理时间为10周，复杂案件可延长至20周。在Helsingborg由城市规划局负责。"
    assert faithful(SWEDISH, chinese, "zh")
    assert not faithful(SWEDISH, ENGLISH + " " + ENGLISH * 4, "en")
    # An acronym of the original is kept too.
    law = "Bygglov krävs enligt Plan- och bygglagen (PBL)."
    assert faithful(law, "A building permit is required under the Planning Act (PBL).", "en")
    assert not faithful(law, "A building permit is required under the Planning Act.", "en")
    # And half of its names: a fluent answer about something else is not shown.
    where = "Ansökan skickas till Boverket eller Länsstyrelsen i Skåne."
    sent = "The application is sent to Boverket or the County Administrative Board in Skåne."
    assert faithful(where, sent, "en", "sv")
    assert not faithful(where, "The application is sent to the authority.", "en", "sv")
    assert faithful(SWEDISH, ENGLISH, "en", "sv")


def test_the_setting_and_its_default_per_model() -> None:
    assert Settings.from_env({}).foreign_answers == "auto"
    assert resolve_mode("auto", model="embedded", llm_url="") == "quote"
    assert resolve_mode("auto", model="/models/qwen.gguf", llm_url="") == "translate"
    assert resolve_mode("auto", model="embedded", llm_url="http://llm:8000/v1") == "translate"
    assert resolve_mode("quote", model="x", llm_url="http://llm") == "quote"
    assert Settings.from_env({"DESKMATE_FOREIGN_ANSWERS": "translate"}).foreign_answers == (
        "translate"
    )
    with pytest.raises(ConfigError, match="DESKMATE_FOREIGN_ANSWERS must be"):
        Settings.from_env({"DESKMATE_FOREIGN_ANSWERS": "both"})
