"""The document library and source on real databases, without a model:
adding a batch with bad inputs in it, sync (only changed passages embedded
again, vanished files removed, new files and pages added), crawling a local
site, internal documents, a second process seeing new documents, and the Slack
workspace purge.

Vectors come from ``HashingEmbedder`` (counted, to see what is embedded
again); the ranking with the real model is tests/e2e/test_documents.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bot.knowledge.cli import answer_json
from bot.knowledge.documents.answer import SEE_ALSO, SEE_ALSO_GAP, quoted, see_also
from bot.knowledge.documents.library import DocumentLibrary, Limits
from bot.knowledge.documents.source import DocumentSource
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.knowledge.passages import DOCUMENT, FAQ, Passage
from bot.messages import say
from llm.embeddings import HashingEmbedder
from storage.documents_repo import DocumentsRepository
from storage.knowledge_repo import KnowledgeRepository
from storage.repository import Repository
from storage.slack_repo import SlackRepository, TokenCipher
from tests.docs_support import MARKDOWN, PAGES, STATE, serve_site, write_bad_inputs, write_folder
from tests.storage.test_slack_repo import KEY, install


class CountingEmbedder(HashingEmbedder):
    """``HashingEmbedder`` that remembers every text it embedded."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        return super().embed(texts)


def _library(repository: Repository, **limits: float) -> tuple[DocumentLibrary, DocumentSource]:
    docs = DocumentsRepository(repository.db)
    embedder = CountingEmbedder()
    source = DocumentSource(repository=docs, embedder=embedder, refresh_interval=0.05)
    library = DocumentLibrary(
        repository=docs,
        embedder=embedder,
        limits=Limits(
            max_bytes=int(limits.get("max_bytes", 2_000_000)), timeout=limits.get("timeout", 1.0)
        ),
        on_change=source.invalidate,
    )
    return library, source


async def test_a_batch_with_bad_inputs_keeps_the_good_ones(
    repository: Repository, tmp_path: Path
) -> None:
    folder = write_folder(tmp_path / "docs")
    expected = write_bad_inputs(folder)
    library, source = _library(repository)
    reports = await library.add_paths([folder, tmp_path / "missing.md"])
    by_name = {r.name: r for r in reports}
    for name in ("handbook.md", "policies.html", "manual.pdf", "onboarding.docx", "notes.txt"):
        assert by_name[name].status == "added" and by_name[name].chunks >= 1, by_name[name]
    for name, reason in expected.items():
        assert by_name[name].status == "failed", by_name[name]
        assert reason in by_name[name].error, (name, by_name[name].error)
    assert by_name[str(tmp_path / "missing.md")].error == "no such file"
    listed = {d.name: d for d in await library.list()}
    assert listed["bomb.docx"].error and listed["bomb.docx"].chunks == 0
    assert listed["manual.pdf"].chunks >= 3 and not listed["manual.pdf"].error

    found = await source.lookup("blue garage gate code", tenant="t1", limit=3)
    best = found.passages[0]
    assert (best.kind, best.origin, best.section) == (
        DOCUMENT,
        "onboarding.docx",
        "Team Onboarding › Parking",
    )
    pdf = await source.lookup("red light blinks three times", tenant="t1", limit=1)
    assert pdf.passages[0].page == 2 and pdf.passages[0].section == "Troubleshooting"


async def test_sync_embeds_only_what_changed(repository: Repository, tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "docs")
    library, source = _library(repository)
    await library.add_paths([folder])
    embedder = library.embedder
    assert isinstance(embedder, CountingEmbedder)
    embedder.texts.clear()

    changed = MARKDOWN.replace("free of charge", "at no cost within 3 days")
    (folder / "handbook.md").write_text(changed, encoding="utf-8")
    (folder / "notes.txt").unlink()
    (folder / "faq.md").write_text("# Returns\n\nReturns are free for 60 days.\n")
    reports = {r.name: r.status for r in await library.sync()}
    assert reports["handbook.md"] == "updated"
    assert reports["notes.txt"] == "removed"
    assert reports["faq.md"] == "added"
    assert reports["manual.pdf"] == reports["policies.html"] == "unchanged"
    # The changed passage (2 vectors) and the new file's; nothing else.
    assert len(embedder.texts) == 4
    assert any("at no cost" in t for t in embedder.texts)
    assert not any("close your account" in t for t in embedder.texts)
    names = {d.name for d in await library.list()}
    assert "notes.txt" not in names and "faq.md" in names
    found = await source.lookup("returns free 60 days", tenant="", limit=1)
    assert found.passages[0].origin == "faq.md"

    embedder.texts.clear()
    assert {r.status for r in await library.sync()} == {"unchanged"}
    assert embedder.texts == []


async def test_a_site_is_crawled_within_its_host_and_rules(
    repository: Repository, tmp_path: Path
) -> None:
    library, source = _library(repository, timeout=1.0)
    with serve_site(delay=3.0) as (base, app):
        reports = await library.add_url(f"{base}/")
        by_url = {r.location: r for r in reports}
        assert by_url[f"{base}/"].status == "added"
        assert by_url[f"{base}/shipping.html"].status == "added"
        assert f"{base}/private/staff.html" not in by_url  # robots.txt
        assert "timed out" in by_url[f"{base}/slow.html"].error
        assert "off-host" in by_url[f"{base}/away.html"].error
        found = await source.lookup("express delivery next working day", tenant="", limit=1)
        best = found.passages[0]
        assert best.url == f"{base}/shipping.html#express"
        assert best.section == "Shipping › Express shipping"
        texts = " ".join(p.text for p in (await source.lookup("shop", tenant="", limit=9)).passages)
        assert "HEADERWORD" not in texts and "PRIVATEWORD" not in texts

        # Sync: unchanged pages answer 304; a new linked page is added; a page
        # the server lost is removed.
        pages = app[PAGES]
        pages["/returns.html"] = "<h1>Returns</h1><p>Send kettles back within 60 days.</p>"
        pages["/"] = pages["/"].replace("</body>", '<a href="/returns.html">R</a></body>')
        del pages["/shipping.html"]
        synced = {r.location: r.status for r in await library.sync()}
        assert synced[f"{base}/"] == "updated"
        assert synced[f"{base}/returns.html"] == "added"
        assert synced[f"{base}/shipping.html"] == "removed"
        before = app[STATE]["etag_hits"]
        synced = {r.location: r.status for r in await library.sync()}
        assert synced[f"{base}/returns.html"] == "unchanged"
        assert app[STATE]["etag_hits"] > before


async def test_a_sitemap_lists_the_pages(repository: Repository) -> None:
    library, _ = _library(repository)
    with serve_site() as (base, _app):
        reports = await library.add_url(f"{base}/sitemap.xml")
    assert sorted(r.location for r in reports if r.status == "added") == [
        f"{base}/",
        f"{base}/shipping.html",
    ]


async def test_uploads_and_removal(repository: Repository) -> None:
    library, source = _library(repository)
    report = await library.add_upload(
        "terms.md", b"# Terms\n\n## Notice\n\nCancel with 30 days notice.\n"
    )
    assert report.status == "added" and report.chunks == 1
    # A sync leaves an upload as it is: it changes when uploaded again.
    assert [r.status for r in await library.sync()] == ["unchanged"]
    source.base_url = "https://files.example.com/docs"
    found = await source.lookup("cancel notice", tenant="", limit=1)
    assert found.passages[0].url == "https://files.example.com/docs/terms.md#notice"
    removed = await library.remove(str(report.id))
    assert [d.name for d in removed] == ["terms.md"]
    assert not await source.has_passages("")
    assert await library.remove("nothing-like-it") == []


async def test_another_process_sees_new_documents_within_seconds(
    repository: Repository, tmp_path: Path
) -> None:
    folder = write_folder(tmp_path / "docs")
    library, _ = _library(repository)
    # The running bot: its own source on the same database, polled every 0.2 s.
    running = DocumentSource(
        repository=DocumentsRepository(repository.db),
        embedder=HashingEmbedder(),
        refresh_interval=0.2,
    )
    assert not await running.has_passages("")
    await library.add_paths([folder / "notes.txt"])
    await asyncio.sleep(0.3)
    found = await running.lookup("helpdesk phone saturday", tenant="", limit=1)
    assert found.passages and found.passages[0].origin == "notes.txt"


async def test_internal_documents_serve_agents_only(repository: Repository, tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "docs")
    library, source = _library(repository)
    kb = KnowledgeBase(repository=KnowledgeRepository(repository.db), embedder=HashingEmbedder())
    kb.register(source)
    await library.add_paths([folder / "onboarding.docx"], internal=True)
    await library.add_paths([folder / "notes.txt"])
    question = "gate code blue garage parking"
    customer = await kb.lookup(question, tenant="t1", limit=5)
    assert all(not p.internal for p in customer.passages)
    assert all(p.origin != "onboarding.docx" for p in customer.passages)
    agents = await kb.lookup(question, tenant="t1", limit=5, agents=True)
    internal = agents.passages[0]
    assert internal.origin == "onboarding.docx" and internal.internal
    assert await kb.choose(internal.ref, tenant="t1", conversation_key="c") is None
    considered = await kb.consider(question, tenant="t1", conversation_key="c")
    assert all(not p.internal for p in considered.passages)
    assert "blue garage" not in getattr(considered.plan, "text", "")


async def test_tenants_see_their_own_and_the_shared_documents(
    repository: Repository, tmp_path: Path
) -> None:
    folder = write_folder(tmp_path / "docs")
    library, source = _library(repository)
    await library.add_paths([folder / "notes.txt"], tenant="T1")
    await library.add_paths([folder / "handbook.md"])
    assert await source.has_passages("T1") and await source.has_passages("T2")
    mine = await source.lookup("helpdesk phone saturday", tenant="T1", limit=9)
    theirs = await source.lookup("helpdesk phone saturday", tenant="T2", limit=9)
    assert "notes.txt" in {p.origin for p in mine.passages}
    assert "notes.txt" not in {p.origin for p in theirs.passages}
    keyword = await DocumentsRepository(repository.db).keyword_search("saturdays", tenant="T2")
    assert keyword == []


async def test_the_slack_purge_removes_the_workspaces_documents(
    repository: Repository, tmp_path: Path
) -> None:
    folder = write_folder(tmp_path / "docs")
    library, _ = _library(repository)
    await library.add_paths([folder / "notes.txt"], tenant="T1")
    await library.add_paths([folder / "handbook.md"], tenant="T2")
    slack = SlackRepository(repository.db, TokenCipher(KEY))
    await slack.save_installation(install("T1", "xoxb-one"))
    assert await slack.delete_installation(enterprise_id=None, team_id="T1") == ["T1"]
    result = await slack.purge_workspace("T1", datetime.now(UTC))
    assert result is not None and result.documents == 1
    docs = DocumentsRepository(repository.db)
    assert [d.tenant for d in await docs.documents()] == ["T2"]
    assert await docs.keyword_search("saturdays", tenant="T1") == []
    assert {c.tenant for c in await docs.chunks()} == {"T2"}


async def test_through_the_manager_documents_answer_cite_and_escalate_into_the_gaps(
    repository: Repository, tmp_path: Path
) -> None:
    from llm.fake import FakeBackend
    from tests.bot.knowledge.test_sources import _ask
    from tests.conftest import make_manager

    folder = write_folder(tmp_path / "docs")
    library, source = _library(repository)
    source.base_url = "https://files.example.com/help"
    kb = KnowledgeBase(
        repository=KnowledgeRepository(repository.db), embedder=HashingEmbedder(), background=()
    )
    kb.register(source)
    await library.add_paths([folder])
    backend = FakeBackend()
    manager = make_manager(repository, backend, knowledge=kb)

    text, _ = await _ask(manager, "red light blinks three times kettle")
    assert text.startswith("“If the red light blinks three times")
    assert "[1]" in text
    cited = "[1] Kettle Manual › Troubleshooting › page 2 — "
    assert f"{cited}https://files.example.com/help/manual.pdf#page=2\n" in f"{text}\n"
    assert backend.requests == []  # quoted, not written
    # Other sections are named apart, below the citation, and logged after it.
    logged = answer_json((await kb.repository.answers(limit=1))[0])["sources"]
    assert logged[0]["section"] == "Troubleshooting"
    also = text.partition(f"\n\n{say('knowledge.doc.see_also')}\n")[2].splitlines()
    assert len(also) == len(logged) - 1 <= SEE_ALSO
    for line, source in zip(also, logged[1:], strict=True):
        assert line.startswith("- ") and line.endswith(source["url"])
    places = [(s["document"], s["section"]) for s in logged]
    assert len(set(places)) == len(places)

    text, _ = await _ask(manager, "Who painted the Mona Lisa?", chat="c2")
    assert text.startswith(say("knowledge.escalation")[:20])
    gaps = await manager.team.repository.gap_questions()
    assert [g.question for g in gaps] == ["Who painted the Mona Lisa?"]


async def test_chinese_and_swedish_documents_are_found_by_keyword(
    repository: Repository, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "zh.md").write_text(
        "# 退货\n\n收到商品后三十天内可以无理由退货。\n", encoding="utf-8"
    )
    (folder / "sv.md").write_text(
        "# Bygglov\n\nKommunen ska besluta om en bygglovsansökan inom tio veckor.\n",
        encoding="utf-8",
    )
    (folder / "en.md").write_text("# Returns\n\nReturn an item within 30 days.\n")
    library, _ = _library(repository)
    await library.add_paths([folder])
    docs = DocumentsRepository(repository.db)
    names = {c.id: c.document_name for c in await docs.chunks(with_embeddings=False)}

    async def found(question: str) -> list[str]:
        return [names[i] for i, _ in await docs.keyword_search(question, tenant="")]

    # No spaces in the question: its character pairs find the passage.
    assert (await found("可以退货吗"))[:1] == ["zh.md"]
    # A part of a compound finds the whole word.
    assert (await found("väntetid ansökan"))[:1] == ["sv.md"]
    assert (await found("returning items"))[:1] == ["en.md"]
    assert await found("天气预报") == []


async def test_passages_stored_before_are_indexed_again_on_upgrade(
    repository: Repository,
) -> None:
    from sqlalchemy import Connection, text

    db = repository.db

    def back_to_before(conn: Connection) -> None:
        # What the previous schema held: the plain text in the index, no extra words.
        if db.dialect == "sqlite":
            conn.execute(text("DROP TABLE document_chunks_fts"))
            conn.execute(
                text(
                    "CREATE VIRTUAL TABLE document_chunks_fts USING fts5(section, text, "
                    "tokenize='porter unicode61 remove_diacritics 2')"
                )
            )
        else:
            conn.execute(text("ALTER TABLE document_chunks DROP COLUMN search_vector"))
            conn.execute(
                text(
                    "ALTER TABLE document_chunks ADD COLUMN search_vector tsvector GENERATED "
                    "ALWAYS AS (setweight(to_tsvector('english', section), 'A') || "
                    "setweight(to_tsvector('english', text), 'B')) STORED"
                )
            )
        conn.execute(text("ALTER TABLE document_chunks DROP COLUMN section_terms"))
        conn.execute(text("ALTER TABLE document_chunks DROP COLUMN text_terms"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0018_faq_text_vectors'"))
        conn.execute(
            text(
                "INSERT INTO documents (tenant, origin, location, name, created_at, changed_at) "
                "VALUES ('', 'file', '/zh.md', 'zh.md', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO document_chunks (document_id, position, section, text, text_hash) "
                "SELECT id, 0, '退货', '收到商品后三十天内可以无理由退货。', 'x' FROM documents"
            )
        )
        if db.dialect == "sqlite":
            conn.execute(
                text(
                    "INSERT INTO document_chunks_fts(rowid, section, text) "
                    "SELECT id, section, text FROM document_chunks"
                )
            )

    await db.run(back_to_before)
    docs = DocumentsRepository(db)
    await db.upgrade()
    assert len(await docs.keyword_search("可以退货吗", tenant="")) == 1


def test_see_also_names_other_public_sections_once_each() -> None:
    def doc(id: str, section: str, **fields: object) -> Passage:
        return Passage(
            DOCUMENT, id, "Manual", f"text {id}", origin="manual.html", section=section, **fields
        )  # type: ignore[arg-type]

    cited = doc("1", "Hold")
    ranked = [
        cited,
        doc("2", "Hold"),
        doc("3", "Pinning", internal=True),
        Passage(FAQ, "7", "How do I hold a package?", "Use apt-mark."),
        doc("4", "Upgrades"),
        doc("9", "Far behind", dense=-SEE_ALSO_GAP - 0.01),
        doc("5", "Upgrades"),
        doc("6", "Pinning"),
        doc("8", "Sources list"),
    ]
    assert [p.id for p in see_also(cited, ranked)] == ["4", "6"]
    # Another page of a PDF's section is another place.
    paged = [doc("10", "Hold", page=3), doc("11", "Hold", page=4), doc("12", "Hold", page=3)]
    assert [p.id for p in see_also(paged[0], paged)] == ["11"]
    assert see_also(cited, ranked[:2]) == ()
    text = quoted(cited, "de", see_also(cited, ranked))
    assert text.endswith("\n\nSiehe auch:\n- Manual › Upgrades\n- Manual › Pinning")
    assert quoted(cited).endswith("[1] Manual › Hold")
