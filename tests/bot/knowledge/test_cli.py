"""``deskmate faq import|export`` and ``deskmate ask`` with the real embedding model."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from bot.knowledge.cli import register, run
from bot.settings import Settings

pytestmark = pytest.mark.model

CSV = (
    "id,question,answer,source\n"
    "hours,What are your opening hours?,We are open 9-17 on weekdays.,Contact page\n"
    'refund,How do I get a refund?,"Reply with your order number; refunds take 5 days.",'
    "Refund policy\n"
    'ship,Do you ship to other countries?,"Yes, to every EU country.",Shipping page\n'
    "broken,,no question,\n"
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="deskmate")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


async def call(settings: Settings, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run(parse(*argv), settings, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_import_ask_export(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    faq = tmp_path / "faq.csv"
    faq.write_text(CSV, encoding="utf-8")

    code, out, err = await call(settings, "faq", "import", str(faq))
    assert code == 0
    assert "3 added, 0 updated, 0 unchanged, 1 skipped" in out
    assert "skipped line 5: the question is empty" in err
    assert "embedding: 3/3" in err

    code, out, _ = await call(settings, "ask", "when are you open during the week?", "--json")
    assert code == 0
    answer = json.loads(out)
    assert answer["path"] == "verbatim"
    assert answer["answer"].startswith("We are open 9-17 on weekdays.")
    assert "Contact page" in answer["answer"]
    assert answer["sources"][0]["id"] == "hours"

    questions = "can I have my money back?\nwhat is the boiling point of lead?\n\n"
    code, out, _ = await call(settings, "ask", "-", "--json", stdin=questions)
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["question"] for r in rows] == [
        "can I have my money back?",
        "what is the boiling point of lead?",
    ]
    # No language model is configured here, so a partial match cannot be
    # answered grounded: it is shown verbatim or escalated, never invented.
    assert rows[0]["sources"][0]["id"] == "refund" and rows[0]["path"] != "grounded"
    assert rows[1]["path"] == "escalated"

    code, out, _ = await call(settings, "faq", "export", "--format", "jsonl")
    exported = [json.loads(line) for line in out.splitlines()]
    assert [e["id"] for e in exported] == ["hours", "refund", "ship"]
    # the export imports back as the same entries (unchanged, not duplicated)
    again = tmp_path / "again.csv"
    code, _, _ = await call(settings, "faq", "export", "-o", str(again))
    code, out, _ = await call(settings, "faq", "import", str(again))
    assert "0 added, 0 updated, 3 unchanged, 0 skipped" in out


async def test_fatal_import_errors_exit_1_and_store_nothing(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    bad = tmp_path / "faq.csv"
    bad.write_text("heading,text\nq,a\n", encoding="utf-8")
    code, out, err = await call(settings, "faq", "import", str(bad))
    assert code == 1 and out == ""
    assert "no question or answer column" in err
    code, out, err = await call(
        settings, "faq", "import", str(bad), "--map", "question=heading", "--map", "answer=text"
    )
    assert code == 0 and "1 added" in out
    code, out, err = await call(settings, "faq", "import", str(tmp_path / "nope.jsonl"))
    assert code == 1 and "cannot read" in err
