"""What the bot itself says on the console's pages (the knowledge policy's
plan and reason, an import's report, a document's error, a transcript's
authors) is said in the reader's language, like the pages around it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy import update

from adapters.webconsole.pages import DECISION_REASONS
from bot.knowledge.documents.library import DocumentLibrary
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.passages import Passage
from bot.knowledge.policy import Policy, decide
from bot.messages import say
from llm.embeddings import HashingEmbedder
from storage.documents_repo import DocumentsRepository
from storage.knowledge_repo import GLOBAL, EntryInput, KnowledgeRepository
from storage.models import messages
from storage.repository import Repository
from tests.storage.support import make_event
from tests.webconsole.serving import SESSION, serving_console

# HashingEmbedder scores: a stored phrasing ~0.53, unrelated < 0.1.
POLICY = Policy(verbatim_score=0.5, verbatim_margin=0.05, grounded_score=0.25)


@pytest.fixture
async def kb(sqlite_repository: Repository) -> KnowledgeBase:
    return KnowledgeBase(
        repository=KnowledgeRepository(sqlite_repository.db),
        embedder=HashingEmbedder(),
        background=(),
        policy=POLICY,
        refresh_interval=0.0,
    )


@pytest.fixture
async def console(sqlite_repository: Repository, kb: KnowledgeBase) -> AsyncIterator[str]:
    db = sqlite_repository.db
    documents = DocumentLibrary(repository=DocumentsRepository(db), embedder=HashingEmbedder())
    async with serving_console(db, knowledge=kb, documents=documents) as base:
        yield base


async def _get(url: str, accept: str) -> str:
    headers = {"Cookie": SESSION, "Accept-Language": accept}
    async with aiohttp.ClientSession() as client, client.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        return await response.text()


def _passage(dense: float, score: float) -> Passage:
    return Passage(kind="faq", id="x", title="t", text="t", score=score, dense=dense)


def test_every_reason_the_policy_gives_has_a_name_in_every_language() -> None:
    decisions = [
        decide([], POLICY),
        decide([_passage(0.1, 0.1)], POLICY),
        decide([_passage(0.9, 0.9), _passage(0.1, 0.1)], POLICY),
        decide([_passage(0.9, 0.9), _passage(0.89, 0.89)], POLICY),
        decide([_passage(0.3, 0.3)], POLICY),
    ]
    reasons = {d.reason for d in decisions}
    assert len(reasons) == 5 and reasons <= DECISION_REASONS.keys()
    for reason, code in DECISION_REASONS.items():
        assert say(f"console.reason.{code}", "en") == reason
        assert say(f"console.reason.{code}", "de") != reason


async def test_the_try_pages_name_the_plan_and_its_reason_in_the_readers_language(
    console: str, kb: KnowledgeBase
) -> None:
    await kb.add(
        EntryInput(
            external_id="ship-1",
            question="How long does shipping take?",
            answer="Orders arrive in 2-3 working days.",
        ),
        tenant=GLOBAL,
    )
    url = console + "/console/knowledge/try?q=How+long+does+shipping+take%3F"
    english = await _get(url, "en")
    assert '<span id="plan-name">Verbatim</span>' in english and "confident match" in english
    german = await _get(url, "de")
    assert '<span id="plan-name">Wörtlich</span>' in german
    assert "sicherer Treffer" in german and "confident match" not in german
    assert '<span class="badge verbatim">wörtliche FAQ</span>' in german
    assert "Modus Support." in german and "Mode support." in english
    # Nothing close: the policy escalates, and says why in the reader's words.
    far = await _get(console + "/console/knowledge/try?q=zebra+quantum+violin", "fr")
    assert "Escalader" in far and "aucune entrée n&#39;est assez proche" in far
    assert "no entry is close enough" not in far and "Escalate" not in far
    # The documents page's try form says the same in its own sentence.
    documents = await _get(console + "/console/documents?q=zebra+quantum+violin", "es")
    assert '<strong id="try-plan">Escalar</strong>' in documents
    assert "ninguna entrada se acerca lo suficiente" in documents


async def _import(console: str, name: str, content: str, accept: str) -> dict[str, object]:
    """Upload ``content`` as ``name`` to the console's import and wait for its end."""
    headers = {
        "Cookie": SESSION,
        "Accept-Language": accept,
        "Origin": console,
        "X-CSRF-Token": "csrf-token",
    }
    form = aiohttp.FormData()
    form.add_field("tenant", "")
    form.add_field("file", content.encode(), filename=name, content_type="text/plain")
    async with aiohttp.ClientSession() as client:
        async with client.post(
            console + "/console/api/knowledge/import", data=form, headers=headers
        ) as response:
            assert response.status == 202, await response.text()
            job = await response.json()
        for _ in range(200):
            url = f"{console}/console/api/knowledge/import/{job['job']}"
            async with client.get(url, headers=headers) as response:
                job = await response.json()
            if job["finished"]:
                return dict(job)
            await asyncio.sleep(0.05)
    raise AssertionError("the import did not finish")


CSV = (
    "id,question,answer,updated_at\n"
    "ship-1,How long does shipping take?,Orders arrive in 2-3 working days.,\n"
    "ret-1,Can I return an item?,,\n"
    "pay-1,Which payment methods do you accept?,Card and invoice.,yesterday\n"
    "ship-1,How long is delivery?,Two to three days.,\n"
)


async def test_an_imports_report_is_said_in_the_readers_language(console: str) -> None:
    german = await _import(console, "faq.csv", CSV, "de")
    assert german["error"] == ""
    assert german["report"] == [
        "faq.csv: 1 hinzugefügt, 0 aktualisiert, 0 unverändert, 3 übersprungen; Sprache: Englisch",
        "  Zeile 2 übersprungen: gleiche ID/Frage wie Zeile 5, die sie ersetzt",
        "  Zeile 3 übersprungen: die Antwort ist leer",
        "  Zeile 4 übersprungen: updated_at 'yesterday' ist kein ISO-Datum",
    ]
    # The same import again, read in English, reads as the CLI prints it.
    english = await _import(console, "faq.csv", CSV, "en")
    assert english["report"][0].startswith("faq.csv: 0 added, 0 updated, 1 unchanged, 3 skipped")
    assert english["report"][1:] == [
        "  skipped line 2: same id/question as line 5, which replaces it",
        "  skipped line 3: the answer is empty",
        "  skipped line 4: updated_at 'yesterday' is not an ISO date",
    ]


async def test_a_refused_file_says_why_in_the_readers_language(console: str) -> None:
    job = await _import(console, "faq.csv", "frage,antwort,notes\nx,y,z\n", "sv")
    assert job["report"] == []
    assert job["error"] == (
        "ingen fråge- eller svarskolumn hittades (kolumner: frage, antwort, notes); "
        "döp dem till question och answer"
    )
    job = await _import(console, "faq.md", "just text, no heading\n", "zh")
    assert job["error"] == "未找到标题；请将每个问题写成 '## ' 标题"


async def _upload(console: str, name: str, data: bytes, accept: str) -> dict[str, object]:
    """Add ``data`` as the document ``name`` from the console and wait for the job."""
    headers = {
        "Cookie": SESSION,
        "Accept-Language": accept,
        "Origin": console,
        "X-CSRF-Token": "csrf-token",
    }
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    async with aiohttp.ClientSession() as client:
        async with client.post(
            console + "/console/api/documents/upload", data=form, headers=headers
        ) as response:
            assert response.status == 202, await response.text()
            job = await response.json()
        for _ in range(200):
            url = f"{console}/console/api/documents/jobs/{job['job']}"
            async with client.get(url, headers=headers) as response:
                job = await response.json()
            if job["finished"]:
                return dict(job)
            await asyncio.sleep(0.05)
    raise AssertionError("the job did not finish")


async def test_why_a_document_failed_is_said_in_the_readers_language(console: str) -> None:
    job = await _upload(console, "manual.txt", b"\x00\x01binary", "de")
    assert job["documents"] == [
        {"name": "manual.txt", "status": "failed", "chunks": 0, "error": "Binärdaten, kein Text"}
    ]
    job = await _upload(console, "notes.docx", b"not a zip at all", "es")
    [document] = job["documents"]  # type: ignore[misc]
    assert document["error"] == "no es un archivo DOCX (dañado o cifrado)"
    # The page lists the latest jobs with each document's problem, in its reader's words.
    page = await _get(console + "/console/documents", "fr")
    assert "notes.docx: pas un fichier DOCX (endommagé ou chiffré)" in page
    assert "manual.txt: données binaires, pas du texte" in page
    # The list of documents too, from what the library stored with each.
    listed = page[page.index("<tbody") : page.index("</tbody>")]
    assert listed.count('<span class="error-text">') == 2
    assert '<span class="error-text">données binaires, pas du texte</span>' in listed
    assert "binary data, not text" not in listed and "not a DOCX file" not in listed


async def test_a_transcripts_unnamed_authors_are_named_in_the_readers_language(
    console: str, sqlite_repository: Repository
) -> None:
    asked = await sqlite_repository.accept(make_event("Where is my order?"), kind="chat")
    await sqlite_repository.record_answer(asked, text="Let me look.", kind="chat")
    # A message whose author was not recorded (the column allows it).
    unnamed = update(messages).where(messages.c.role == "user").values(user_id="")
    await sqlite_repository.db.run(lambda conn: conn.execute(unnamed))
    url = f"{console}/console/conversations/{asked.conversation_id}"
    german = await _get(url, "de")
    assert "<strong>Kunde</strong>" in german and "<strong>customer</strong>" not in german
    assert "<strong>Deskmate</strong>" in german
    chinese = await _get(url, "zh")
    assert "<strong>客户</strong>" in chinese
    # An export is a file for anyone: it keeps the English names.
    exported = json.loads(await _get(url + "/export.json", "de"))
    assert [m["author"] for m in exported["messages"]] == ["customer", "Deskmate"]


async def test_a_text_read_in_another_encoding_says_so_in_the_readers_language(
    console: str,
) -> None:
    latin = "Öppettider: måndag till fredag, nio till fem. Välkommen åter!\n" * 3
    job = await _upload(console, "hours.txt", latin.encode("cp1252"), "de")
    [document] = job["documents"]  # type: ignore[misc]
    assert document["status"] == "added"
    assert document["error"].startswith("kein UTF-8; gelesen als ")
    page = await _get(console + "/console/documents", "sv")
    listed = page[page.index("<tbody") : page.index("</tbody>")]
    assert "inte UTF-8; läst som " in listed and "not UTF-8" not in listed
