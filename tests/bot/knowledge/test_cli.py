"""``deskmate faq import|export``, ``deskmate ask --json`` and the local web chat,
as subprocesses with the real embedding model and the fake LLM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_local_chat import ROOT, start_deskmate, stop

pytestmark = pytest.mark.model

CSV = (
    "id,question,answer,source\n"
    "hours,What are your opening hours?,We are open 9-17 on weekdays.,Contact page\n"
    'refund,How do I get a refund?,"Reply with your order number; refunds take 5 days.",'
    "Refund policy\n"
    'ship,Do you ship to other countries?,"Yes, to every EU country.",Shipping page\n'
    "broken,,no question,\n"
)


def deskmate(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SLACK_"))},
        "DESKMATE_DATA_DIR": str(tmp_path / "data"),
        "DESKMATE_MODEL": "fake",
    }
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_then_ask_and_chat_get_the_curated_answer(tmp_path: Path) -> None:
    faq = tmp_path / "faq.csv"
    faq.write_text(CSV, encoding="utf-8")
    result = deskmate(tmp_path, "faq", "import", str(faq))
    assert result.returncode == 0, result.stderr
    assert "3 added, 0 updated, 0 unchanged, 1 skipped" in result.stdout
    assert "skipped line 5: the question is empty" in result.stderr
    assert "embedding: 3/3" in result.stderr
    # The import adapts the model by itself; three entries are too few to learn from.
    assert "adapting the embedding model to the entries" in result.stderr
    assert "the embedding model was not adapted: the knowledge base has 3" in result.stderr
    result = deskmate(tmp_path, "faq", "tune")
    assert result.returncode == 1
    assert "has 3 deployment-wide entries; adapting the embedding model needs at least 20" in (
        result.stderr
    )

    questions = "when are you open during the week?\nwhat is the boiling point of lead?\n"
    # More questions than one person may send a minute: the operator's batch is not throttled.
    result = deskmate(tmp_path, "ask", "-", "--json", stdin=questions * 11)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["path"] for a in answers] == ["verbatim", "escalated"] * 11
    hours, lead = answers[:2]
    assert hours["path"] == "verbatim"
    assert hours["answer"] == "We are open 9-17 on weekdays.\n\nSource: Contact page (FAQ hours)"
    assert hours["sources"][0]["id"] == "hours" and hours["sources"][0]["score"] > 0.6
    assert lead["path"] == "escalated" and "human colleague" in lead["answer"]

    server = start_deskmate(tmp_path, {"DESKMATE_MODEL": "fake"})
    try:
        status, text = server.post_chat(
            {"session": "session-faq001", "text": "which hours are you open on weekdays?"}
        )
        assert status == 200
        assert text.startswith("We are open 9-17 on weekdays.")
        assert "Source: Contact page (FAQ hours)" in text
    finally:
        assert stop(server)[0] == 0

    result = deskmate(tmp_path, "faq", "export", "--format", "jsonl")
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [
        "hours",
        "refund",
        "ship",
    ]
    exported = tmp_path / "again.csv"
    assert deskmate(tmp_path, "faq", "export", "-o", str(exported)).returncode == 0
    result = deskmate(tmp_path, "faq", "import", str(exported))
    assert "0 added, 0 updated, 3 unchanged, 0 skipped" in result.stdout


def test_fatal_import_errors_exit_1_and_store_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "faq.csv"
    bad.write_text("heading,text\nq,a\n", encoding="utf-8")
    result = deskmate(tmp_path, "faq", "import", str(bad))
    assert result.returncode == 1 and result.stdout == ""
    assert "no question or answer column" in result.stderr
    result = deskmate(
        tmp_path, "faq", "import", str(bad), "--map", "question=heading", "--map", "answer=text"
    )
    assert result.returncode == 0 and "1 added" in result.stdout
    result = deskmate(tmp_path, "faq", "import", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 1 and "cannot read" in result.stderr


def test_tune_then_ask_with_the_adapted_model(tmp_path: Path) -> None:
    from bot.knowledge.evaluation import faq_jsonl
    from tests.support import FAQ_DATA

    faq = tmp_path / "faq.jsonl"
    lines = faq_jsonl(FAQ_DATA).read_text(encoding="utf-8").splitlines()[:24]
    faq.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert deskmate(tmp_path, "faq", "import", str(faq), "--no-tune").returncode == 0

    result = deskmate(tmp_path, "faq", "tune", "--epochs", "1")
    assert result.returncode == 0, result.stderr
    assert "adapting: 1/1" in result.stderr
    assert "trained on 24 entries" in result.stdout and "24 entries re-embedded" in result.stdout
    (folder,) = (tmp_path / "data" / "embeddings").iterdir()
    assert folder.name.startswith("all-MiniLM-L6-v2-kb-") and folder.name in result.stdout

    result = deskmate(tmp_path, "ask", "--json", "how long until the council decides on my permit?")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["path"] == "verbatim" and answer["sources"][0]["id"] == "bygglov-002"

    result = deskmate(tmp_path, "faq", "import", str(faq))
    assert "run `deskmate faq tune` again" not in result.stderr  # nothing changed
    result = deskmate(tmp_path, "faq", "tune", "--reset")
    assert result.returncode == 0 and "back to the base model all-MiniLM-L6-v2" in result.stdout
