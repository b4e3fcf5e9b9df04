"""Keyword search for languages without spaces (CJK) and for compounding languages,
on SQLite FTS5 and PostgreSQL full-text search alike."""

from __future__ import annotations

from storage.keywords import index_text, keyword_terms, search_terms
from storage.knowledge_repo import EntryInput, KnowledgeRepository
from storage.repository import Repository

ENTRIES = [
    EntryInput(
        question="露台需要建筑许可证吗？",
        answer="一般情况下，高度不超过1.8米的露台不需要建筑许可证。",
        external_id="zh-deck",
    ),
    EntryInput(
        question="退货政策是什么？",
        answer="收到商品后三十天内可以无理由退货。",
        external_id="zh-return",
    ),
    EntryInput(
        question="Hur lång är handläggningstiden?",
        answer="Kommunen ska besluta om en bygglovsansökan inom tio veckor.",
        external_id="sv-time",
    ),
    EntryInput(
        question="Wann brauche ich eine Baugenehmigung?",
        answer="Für Anbauten und Nutzungsänderungen ist ein Bauantrag nötig.",
        external_id="de-permit",
    ),
    EntryInput(question="How do I return an item?", answer="Within 30 days.", external_id="en"),
]


async def _found(repo: KnowledgeRepository, question: str) -> list[str]:
    by_id = {e.id: e.external_id for e in await repo.entries()}
    return [str(by_id[i]) for i, _ in await repo.keyword_search(question, tenant="")]


async def test_cjk_and_compounds_are_searchable(repository: Repository) -> None:
    repo = KnowledgeRepository(repository.db)
    await repo.upsert_many("", [(e, None) for e in ENTRIES], embedding_model="")
    # No spaces in the question: the character pairs 露台 and 许可 do the matching.
    assert (await _found(repo, "我想在院子里搭一个露台，要许可吗"))[0] == "zh-deck"
    assert (await _found(repo, "可以退货吗"))[0] == "zh-return"
    # A part of a compound finds the whole word, in the answer too.
    assert (await _found(repo, "hur lång tid tar ett bygglov"))[0] == "sv-time"
    assert (await _found(repo, "Genehmigung für meinen Anbau"))[0] == "de-permit"
    # English keeps its stemmed word search.
    assert (await _found(repo, "returning items"))[0] == "en"
    assert await _found(repo, "天气预报") == []


def test_terms() -> None:
    assert keyword_terms("露台吗") == ["露台", "台吗"]
    assert keyword_terms("我") == ["我"]
    assert keyword_terms("the ROT-avdrag för 露台") == ["rot", "avdrag", "för", "露台"]
    assert "lovsa" in index_text("bygglovsansökan").split()
    assert index_text("a short one") == "a short one"
    assert search_terms("bygglov") == ["bygglov", "byggl", "ygglo", "gglov"]


async def test_an_entry_indexed_before_is_indexed_again_on_import(repository: Repository) -> None:
    from sqlalchemy import Connection, text, update

    from storage.models import faq_entries

    repo = KnowledgeRepository(repository.db)
    await repo.upsert_many("", [(ENTRIES[0], None)], embedding_model="")

    def as_before(conn: Connection) -> None:
        # What an older version stored: the plain text, without character pairs.
        conn.execute(update(faq_entries).values(search_text=ENTRIES[0].question))
        if repo.dialect == "sqlite":
            conn.execute(text("DELETE FROM faq_fts"))
            conn.execute(
                text(
                    "INSERT INTO faq_fts(rowid, question, answer) "
                    "SELECT id, question, answer FROM faq_entries"
                )
            )

    await repository.db.run(as_before)
    assert await _found(repo, "搭一个露台") == []
    result = await repo.upsert_many("", [(ENTRIES[0], None)], embedding_model="")
    assert result.unchanged == 1
    assert await _found(repo, "搭一个露台") == ["zh-deck"]
