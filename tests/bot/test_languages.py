"""The customer's language: detection, the fallback chain, ``/language``, the
fixed texts in the customer's language and ``/translate`` in a ticket, with
real storage and the scripted fake model."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.handoff.config import HandoffSettings, parse_spaces
from bot.handoff.desk import HelpDesk
from bot.handoff.worker import OutboxWorker
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.passages import Passage
from bot.knowledge.policy import Decision, Policy
from bot.language import (
    SUPPORTED_LANGUAGES,
    detect_language,
    parse_language,
    resolve_language,
)
from bot.manager import ConversationManager
from bot.messages import CATALOG, say
from bot.plans import Clarify, Escalate, in_language
from bot.settings import Settings
from llm.embeddings import HashingEmbedder
from llm.fake import FakeBackend
from storage.handoff_repo import HandoffRepository
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository
from tests.bot.handoff.test_handoff import FakeChannel, agent
from tests.conftest import make_manager
from tests.support import Rendered, make_inbound

SHORT = {
    "en": ["Where is my order?", "How do I reset my password?", "Can I pay by invoice?"],
    "sv": ["Var är min beställning?", "Hur återställer jag mitt lösenord?", "Hur gör jag?"],
    "de": ["Wo ist meine Bestellung?", "Kann ich auf Rechnung zahlen?", "Liefert ihr nach Wien?"],
    "es": ["¿Dónde está mi pedido?", "¿Puedo pagar con factura?", "Quiero un reembolso"],
    "fr": ["Où est ma commande ?", "Puis-je payer par facture ?", "Je veux être remboursé"],
    "zh": ["我的订单在哪里？", "怎么重置密码？", "我要退款"],
}
LONG = {
    "en": "I ordered a blue jacket two weeks ago and it still has not arrived. The tracking "
    "page has said 'in transit' since Monday. Could you check what happened?",
    "sv": "Jag beställde en blå jacka för två veckor sedan och den har fortfarande inte kommit. "
    "Spårningssidan har visat 'under transport' sedan i måndags. Kan ni kolla vad som hänt?",
    "de": "Ich habe vor zwei Wochen eine blaue Jacke bestellt und sie ist immer noch nicht da. "
    "Die Sendungsverfolgung zeigt seit Montag 'unterwegs'. Könnt ihr nachsehen, was los ist?",
    "es": "Pedí una chaqueta azul hace dos semanas y todavía no ha llegado. La página de "
    "seguimiento dice 'en tránsito' desde el lunes. ¿Podéis comprobar qué ha pasado?",
    "fr": "J'ai commandé une veste bleue il y a deux semaines et elle n'est toujours pas "
    "arrivée. Le suivi indique 'en transit' depuis lundi. Pouvez-vous vérifier ce qui se passe ?",
    "zh": "我两周前订了一件蓝色夹克，到现在还没收到。物流页面从周一起一直显示“运输中”。"
    "你们能帮我查一下是怎么回事吗？",
}


@pytest.mark.parametrize(
    ("language", "text"), [(lang, text) for lang, texts in SHORT.items() for text in texts]
)
def test_short_questions_are_detected(language: str, text: str) -> None:
    assert detect_language(text) == language


@pytest.mark.parametrize("language", sorted(LONG))
def test_long_messages_are_detected(language: str) -> None:
    assert detect_language(LONG[language]) == language


@pytest.mark.parametrize(
    "text",
    ["ok", "👍", "12345", "thanks", "Hej", "merci", "", "https://example.com/a/b", "こんにちは"],
)
def test_messages_too_short_or_foreign_have_no_language(text: str) -> None:
    assert detect_language(text) is None


def test_links_and_mentions_do_not_decide_the_language() -> None:
    assert detect_language("https://shop.example.com/track?id=42 wo ist mein Paket?") == "de"
    assert detect_language("<@U123> ¿dónde está mi pedido?") == "es"


def test_the_fallback_chain_and_what_admins_may_type() -> None:
    assert resolve_language("sv", conversation="de", tenant="fr", deployment="es") == "sv"
    assert resolve_language(None, conversation="de", tenant="fr", deployment="es") == "de"
    assert resolve_language(None, tenant="fr", deployment="es") == "fr"
    assert resolve_language(None, deployment="es") == "es"
    assert resolve_language(None, conversation="xx", deployment="") == "en"
    assert [parse_language(s) for s in ("SV", "zh-CN", "svenska", "German", "klingon", "")] == [
        "sv",
        "zh",
        "sv",
        "de",
        None,
        None,
    ]


def test_the_deployment_language_is_a_supported_one() -> None:
    assert Settings.from_env({"DESKMATE_LANGUAGE": "sv"}).language == "sv"
    with pytest.raises(ConfigError, match="DESKMATE_LANGUAGE must be one of en, sv"):
        Settings.from_env({"DESKMATE_LANGUAGE": "klingon"})


async def ask(manager: ConversationManager, text: str, **kw: object) -> str:
    reply = await manager.handle(make_inbound(text, **kw), Rendered())  # type: ignore[arg-type]
    return reply.text


def system_prompt(backend: FakeBackend) -> str:
    return backend.requests[-1].messages[0].content


async def test_the_customer_is_answered_in_the_language_of_the_conversation(
    repository: Repository, backend: FakeBackend
) -> None:
    manager = make_manager(repository, backend, language="es")
    # Too short to tell, nothing known: the deployment's DESKMATE_LANGUAGE.
    assert await ask(manager, "/start", chat="c1") == say("commands.start", "es")
    # The model is told to write in the customer's language.
    await ask(manager, "Var är min beställning? Jag beställde i måndags.", chat="c1")
    assert "Always write your answer in Swedish" in system_prompt(backend)
    # A short message or a command then follows the conversation's last language.
    await ask(manager, "ok", chat="c1")
    assert "Always write your answer in Swedish" in system_prompt(backend)
    assert await ask(manager, "/start", chat="c1") == say("commands.start", "sv")
    helped = await ask(manager, "/help", chat="c1")
    assert helped.startswith("Det här kan jag göra:")
    assert "/human — prata med en person från supportteamet" in helped
    # The language changes with the customer's.
    await ask(manager, "Where is my order? I placed it on Monday.", chat="c1")
    assert "Always write your answer" not in system_prompt(backend)
    assert await ask(manager, "/start", chat="c1") == say("commands.start")
    # Another conversation knows nothing of it.
    assert await ask(manager, "/start", chat="c2") == say("commands.start", "es")


async def test_language_is_set_by_the_tenants_admins_and_shown_to_everyone(
    repository: Repository, backend: FakeBackend
) -> None:
    manager = make_manager(repository, backend)
    shown = await ask(manager, "/language", chat="c1")
    assert shown.startswith("Customers are answered in the language they write in.")
    assert "English (en, the deployment's setting)" in shown
    # A customer may read it, not change it.
    refused = await ask(manager, "/language de", chat="c1", user="u1")
    assert refused == say("language.admins_only")
    assert await manager.languages.of_tenant("test", "t1") is None  # type: ignore[union-attr]
    # An admin (an owner here) sets it; an unknown language is said so.
    assert "klingon" in await ask(manager, "/language klingon", user="admin")
    assert await ask(manager, "/language Deutsch", user="admin") == say(
        "language.set", language="Deutsch", code="de"
    )
    # Customers of the tenant whose language cannot be told get German texts.
    assert await ask(manager, "/start", chat="c3") == say("commands.start", "de")
    assert "Deutsch (de, für diesen Workspace festgelegt)" in await ask(
        manager, "/language", chat="c3"
    )
    # Another tenant keeps the deployment's.
    assert await ask(manager, "/start", chat="c4", tenant="t2") == say("commands.start")
    cleared = await ask(manager, "/language default", chat="c5", user="admin")
    # Said in the tenant's language of the moment: the admin wrote only a command.
    assert cleared == say("language.cleared", "de", language="English", code="en")
    assert await manager.languages.of_tenant("test", "t1") is None  # type: ignore[union-attr]
    assert await ask(manager, "/start", chat="c6") == say("commands.start")


def kb_for(repository: Repository, **policy: float) -> KnowledgeBase:
    return KnowledgeBase(
        repository=KnowledgeRepository(repository.db),
        embedder=HashingEmbedder(),
        background=(),
        policy=Policy(**policy) if policy else Policy(verbatim_score=0.5, grounded_score=0.25),
        refresh_interval=0.0,
    )


async def test_a_chinese_question_gets_its_fixed_texts_in_chinese(
    repository: Repository, backend: FakeBackend, tmp_path: Path
) -> None:
    kb = kb_for(repository)
    path = tmp_path / "faq.csv"
    path.write_text(
        "id,question,answer\nhours,What are your opening hours?,We are open 9-17.\n",
        encoding="utf-8",
    )
    await kb.import_file(path)
    manager = make_manager(repository, backend, knowledge=kb)
    escalated = await ask(manager, "铅的沸点是多少度？请告诉我。")
    assert escalated == CATALOG["zh"]["knowledge.escalation"]
    # The "did you mean" list and its button, and a verbatim answer's source line.
    passage = Passage(kind="faq", id="hours", title="What are your opening hours?", text="9-17")
    decision = Decision("grounded", (passage,), 0.5, 0.1, "between the thresholds")
    chosen = in_language(Clarify((passage,), decision), "zh")
    assert chosen.text.startswith("我不确定您指的是下面哪一个：\n1. What are your opening hours?")
    assert chosen.buttons[-1] == ("都不是 — 联系人工客服", "/human")
    suggested = in_language(Escalate("faq mode", (passage,), decision, suggest=True), "zh")
    assert suggested.text.startswith("我没有找到确切的答案。")
    assert suggested.text.endswith(CATALOG["zh"]["knowledge.escalation"])


@pytest.fixture
async def desk_manager(
    repository: Repository, backend: FakeBackend
) -> AsyncIterator[tuple[ConversationManager, OutboxWorker, dict[str, FakeChannel]]]:
    desk = HelpDesk(
        settings=HandoffSettings(spaces=parse_spaces("slack:T1/C1"), signature="Acme support"),
        tickets=HandoffRepository(repository.db),
    )
    manager = make_manager(repository, backend, desk=desk, language="en")
    channels = {"test": FakeChannel("test"), "slack": FakeChannel("slack")}
    yield manager, OutboxWorker(desk=desk, channels=channels), channels


async def test_agents_see_the_language_and_translate_both_ways(
    desk_manager: tuple[ConversationManager, OutboxWorker, dict[str, FakeChannel]],
    backend: FakeBackend,
) -> None:
    manager, worker, channels = desk_manager
    backend.enqueue("Kunden vill ha pengarna tillbaka.")  # the case summary
    opened = await ask(manager, "Jag vill prata med en människa, tack.")
    # (The model is asked for the ticket's case summary, and nothing else.)
    assert opened == CATALOG["sv"]["handoff.opened"]
    follow = "Jag har inte fått min beställning 42."
    await ask(manager, follow)
    await worker.flush()
    [(_, _, ticket)] = channels["slack"].tickets
    assert "Language: svenska (sv)" in ticket
    thread = "100"
    # Relayed as written: no translation unless the agent asks.
    assert channels["slack"].posts[-1][1] == f"name-u1: {follow}"

    backend.enqueue("I have not received my order 42.")
    translated = await ask(manager, "/translate", **agent(thread))
    assert translated == (
        "Machine translation of the customer's last message (svenska → English):\n"
        "I have not received my order 42."
    )
    request = backend.requests[-1].messages
    assert "from Swedish into English" in request[0].content
    assert request[-1].content == follow

    backend.enqueue("Din beställning skickas i morgon.")
    draft = await ask(manager, "/translate Your order ships tomorrow.", **agent(thread))
    assert draft == (
        "Machine translation into the customer's language (svenska); check it, then send it "
        "as your reply:\nDin beställning skickas i morgon."
    )
    request = backend.requests[-1].messages
    assert "from English into Swedish" in request[0].content
    assert request[-1].content == "Your order ships tomorrow."
    # Nothing reached the customer: the agent sends it when they choose to.
    await worker.flush()
    assert "Din beställning" not in " ".join(channels["test"].texts("c1"))

    # The customer's notices from the desk follow their language too.
    await ask(manager, "/resolve", **agent(thread))
    await worker.flush()
    assert channels["test"].texts("c1")[-1].startswith(CATALOG["sv"]["handoff.resolved_notice"])


async def test_translate_says_when_there_is_nothing_to_translate(
    desk_manager: tuple[ConversationManager, OutboxWorker, dict[str, FakeChannel]],
    backend: FakeBackend,
) -> None:
    manager, worker, _ = desk_manager
    backend.enqueue("summary")
    await ask(manager, "/human")
    await worker.flush()
    assert await ask(manager, "/translate", **agent("100")) == say("translate.nothing", id=1)
    # Outside a ticket it is a ticket command.
    assert "works inside a ticket" in await ask(manager, "/translate", **agent(""))


def test_every_supported_language_has_texts() -> None:
    assert set(SUPPORTED_LANGUAGES) <= set(CATALOG)


async def test_a_draft_is_written_in_the_language_of_its_brief(
    repository: Repository, backend: FakeBackend
) -> None:
    manager = make_manager(repository, backend, knowledge=kb_for(repository))
    backend.enqueue("Hej! Din leverans är tyvärr försenad.")
    await ask(manager, "/draft email kunden ska få veta att leveransen är försenad", user="admin")
    assert "Always write your answer in Swedish" in system_prompt(backend)
    backend.enqueue("Hej! Leveransen är försenad.")
    await ask(manager, "shorter", user="admin")  # the revision keeps the draft's language
    assert "Always write your answer in Swedish" in system_prompt(backend)


@pytest.mark.model
def test_ask_json_reports_the_language_and_answers_chinese_in_chinese(tmp_path: Path) -> None:
    from tests.bot.knowledge.test_cli import CSV, deskmate

    faq = tmp_path / "faq.csv"
    faq.write_text(CSV, encoding="utf-8")
    assert deskmate(tmp_path, "faq", "import", str(faq), "--no-tune").returncode == 0
    questions = "铅的沸点是多少度？请告诉我。\nok\nWhat is the boiling point of lead?\n"
    result = deskmate(tmp_path, "ask", "-", "--json", stdin=questions)
    assert result.returncode == 0, result.stderr
    chinese, short, english = [json.loads(line) for line in result.stdout.splitlines()]
    assert (chinese["language"], chinese["detected"]) == ("zh", "zh")
    assert chinese["path"] == "escalated"
    assert chinese["answer"] == CATALOG["zh"]["knowledge.escalation"]
    # Too short to tell: answered in the deployment's language, and said so.
    assert (short["language"], short["detected"]) == ("en", None)
    assert (english["language"], english["path"]) == ("en", "escalated")
    assert english["answer"] == CATALOG["en"]["knowledge.escalation"]


async def test_agents_are_written_to_in_their_tenants_language_not_the_customers(
    repository: Repository, backend: FakeBackend
) -> None:
    desk = HelpDesk(
        settings=HandoffSettings(spaces=parse_spaces("slack:T1/C1"), signature="Acme support"),
        tickets=HandoffRepository(repository.db),
    )
    # The deployment speaks Swedish; the customer writes English.
    manager = make_manager(repository, backend, desk=desk, language="sv")
    space = FakeChannel("slack")
    worker = OutboxWorker(desk=desk, channels={"test": FakeChannel("test"), "slack": space})
    backend.enqueue("The customer wants a refund.")
    opened = await ask(manager, "I would like to talk to a person, please.")
    assert opened == CATALOG["en"]["handoff.opened"]
    await worker.flush()
    [(_, _, ticket)] = space.tickets
    assert ticket.startswith("Ärende #1 · test")
    assert say("handoff.why.request", "sv") in ticket
    listed = await ask(manager, "/tickets", **agent(""))
    assert listed.startswith(CATALOG["sv"]["handoff.tickets_open"])
    # The workspace's own /language wins over the deployment's.
    assert manager.languages is not None
    await manager.languages.set_tenant("slack", "T1", "de", by="slack:T1/UADMIN")
    listed = await ask(manager, "/tickets", **agent(""))
    assert listed.startswith(CATALOG["de"]["handoff.tickets_open"])
    released = await ask(manager, "/release", **agent("100"))
    assert released == say("handoff.not_claimed", "de", id=1)


async def test_translate_writes_into_the_agents_tenant_language(
    desk_manager: tuple[ConversationManager, OutboxWorker, dict[str, FakeChannel]],
    backend: FakeBackend,
) -> None:
    manager, worker, _ = desk_manager
    assert manager.languages is not None
    await manager.languages.set_tenant("slack", "T1", "de", by="slack:U1")
    backend.enqueue("Der Kunde möchte sein Geld zurück.")  # the case summary
    await ask(manager, "Jag vill prata med en människa, tack.")
    await ask(manager, "Jag har inte fått min beställning 42.")
    await worker.flush()
    backend.enqueue("Ich habe meine Bestellung 42 nicht erhalten.")
    translated = await ask(manager, "/translate", **agent("100"))
    assert translated == (
        CATALOG["de"]["translate.of_customer"].format(source="svenska", target="Deutsch")
        + "Ich habe meine Bestellung 42 nicht erhalten."
    )
    assert "from Swedish into German" in backend.requests[-1].messages[0].content
