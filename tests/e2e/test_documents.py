"""Documents end to end, through the CLI as an operator runs it: a folder
with one document of each format (and bad ones) and a small website served on
127.0.0.1 are added with ``deskmate docs add``, then ``deskmate ask --json``
answers questions only those documents answer, in other words than their
headings, citing the right document, section, anchor or page; off-topic
questions are escalated. Real embedding model, fake LLM, no network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.docs_support import serve_site, write_bad_inputs, write_folder
from tests.e2e.test_local_chat import ROOT

pytestmark = pytest.mark.model

# question, document, what the section ends with, anchor, page
EXPECTED = [
    (
        "How do I get rid of my account?",
        "handbook.md",
        "Closing an account",
        "closing-an-account",
        None,
    ),
    (
        "My parcel never came, what happens now?",
        "handbook.md",
        "Lost parcels",
        "lost-parcels",
        None,
    ),
    ("For how many years is the kettle guaranteed?", "policies.html", "Warranty", "warranty", None),
    ("How often do I need to descale the kettle?", "manual.pdf", "Cleaning", None, 1),
    (
        "What does it mean when the light flashes three times?",
        "manual.pdf",
        "Troubleshooting",
        None,
        2,
    ),
    ("Where should staff put their cars at work?", "onboarding.docx", "Parking", "parking", None),
    (
        "Until what time is the helpdesk reachable by phone on Saturdays?",
        "notes.txt",
        None,
        None,
        None,
    ),
    (
        "How quickly does an express order arrive?",
        "/shipping.html",
        "Express shipping",
        "express",
        None,
    ),
]
OFF_TOPIC = [
    "What is the capital of France?",
    "Tell me a joke",
    "Who won the football world cup in 2014?",
]


def deskmate(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SLACK_"))},
        "DESKMATE_DATA_DIR": str(data),
        "DESKMATE_MODEL": "fake",
        "DESKMATE_DOCS_BASE_URL": "https://files.example.com/help",
        "DESKMATE_DOCS_MAX_BYTES": "2000000",
        "DESKMATE_DOCS_TIMEOUT": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_documents_are_added_asked_and_cited(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "docs")
    bad = write_bad_inputs(tmp_path / "bad")
    data = tmp_path / "data"
    with serve_site(delay=3.0) as (base, _app):
        added = deskmate(data, "docs", "add", str(folder), str(tmp_path / "bad"), f"{base}/")
    lines = added.stdout.splitlines()
    assert added.returncode == 1, added.stderr  # some failed; the rest are in
    for name in ("handbook.md", "policies.html", "manual.pdf", "onboarding.docx", "notes.txt"):
        assert any(line.startswith("added") and name in line for line in lines), lines
    for name, reason in bad.items():
        assert any(
            line.startswith("failed") and name in line and reason in line for line in lines
        ), (name, lines)
    assert any("timed out" in line and "slow.html" in line for line in lines)
    assert any("off-host" in line and "away.html" in line for line in lines)

    listed = deskmate(data, "docs", "list", "--json")
    documents = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {"id", "title", "document", "chunks", "last_sync", "error"} <= set(documents[0])
    assert any(d["document"].endswith("shipping.html") and d["chunks"] for d in documents)

    questions = [q for q, *_ in EXPECTED] + OFF_TOPIC
    asked = deskmate(data, "ask", "-", "--json", stdin="\n".join(questions) + "\n")
    assert asked.returncode == 0, asked.stderr
    answers = [json.loads(line) for line in asked.stdout.splitlines()]
    assert len(answers) == len(questions)
    for (question, document, section, anchor, page), answer in zip(EXPECTED, answers, strict=False):
        _check_cited(answer, question, document, section, anchor, page, base)
    for answer in answers[len(EXPECTED) :]:
        assert answer["path"] == "escalated", answer


def _check_cited(
    answer: dict[str, Any],
    question: str,
    document: str,
    section: str | None,
    anchor: str | None,
    page: int | None,
    base: str,
) -> None:
    assert answer["path"] in ("verbatim", "grounded"), (question, answer)
    first = answer["sources"][0]
    assert first["kind"] == "document"
    assert set(first) >= {"id", "document", "title", "section", "anchor", "page", "url", "score"}
    assert first["document"].endswith(document), (question, first)
    if section is not None:
        assert first["section"].endswith(section), (question, first)
    assert first["anchor"] == anchor and first["page"] == page, (question, first)
    assert "[1]" in answer["answer"]
    if document.startswith("/"):
        assert first["url"] == f"{base}{document}#{anchor}"
    else:
        fragment = f"#page={page}" if page else (f"#{anchor}" if anchor else "")
        assert first["url"] == f"https://files.example.com/help/{document}{fragment}"
    assert first["url"] in answer["answer"]
