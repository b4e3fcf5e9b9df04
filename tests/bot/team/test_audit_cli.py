"""``deskmate faq import`` is audited as actor ``cli``; ``deskmate audit export``
writes the trail as JSON lines."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bot import cli
from bot.knowledge import cli as faq_cli
from bot.knowledge.knowledge_base import KnowledgeBase
from bot.settings import Settings
from llm.embeddings import HashingEmbedder
from storage.db import Database
from storage.knowledge_repo import KnowledgeRepository
from storage.team_repo import TeamRepository


def _hashing_kb(db: Database, settings: Settings, backend: object = None) -> KnowledgeBase:
    return KnowledgeBase(
        repository=KnowledgeRepository(db), embedder=HashingEmbedder(), background=()
    )


async def _seed(url: str) -> None:
    db = Database(url)
    try:
        await db.upgrade()
        team = TeamRepository(db)
        await team.set_role("T1", "slack:T1/U1", "agent", by="slack:T1/UOWNER")
        await team.set_quota("T2", "", 5000, by="telegram:42")
    finally:
        await db.dispose()


def test_faq_import_is_audited_and_the_trail_exports_as_json_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'deskmate.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("DESKMATE_DATA_DIR", str(tmp_path))
    for name in ("TELEGRAM_BOT_TOKEN", "SLACK_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(faq_cli, "create_knowledge_base", _hashing_kb)
    asyncio.run(_seed(url))
    faq = tmp_path / "faq.csv"
    faq.write_text("question,answer\nOpen on Sundays?,No.\n", encoding="utf-8")
    assert cli.main(["faq", "import", str(faq), "--tenant", "T1"]) == 0
    out = tmp_path / "audit.jsonl"
    assert cli.main(["audit", "export", "-o", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["tenant"], r["actor"], r["action"]) for r in records] == [
        ("T1", "slack:T1/UOWNER", "role"),
        ("T2", "telegram:42", "quota"),
        ("T1", "cli", "faq.import"),
    ]
    assert records[2]["target"] == "faq.csv" and records[2]["details"]["added"] == 1
    assert records[0]["at"] < records[2]["at"]
    capsys.readouterr()
    assert cli.main(["audit", "export", "--tenant", "T2"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["details"] == {"daily_tokens": 5000}
