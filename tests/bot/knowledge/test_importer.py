"""Parsing FAQ files: formats, column detection, per-row problems with line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.knowledge.importer import (
    MAX_ANSWER_CHARS,
    KnowledgeImportError,
    parse_file,
    parse_mapping,
    parse_text,
)


def test_csv_detects_common_columns_and_reports_bad_rows_by_line() -> None:
    content = (
        "id,q,a,sources,category\n"
        "r1,How do I reset?,Use the link.,Help centre,account\n"
        'r2,"Multi\nline question?",Answer two.,,billing\n'
        "r3,Too few fields\n"
        "r4,,No question here.,,\n"
        f"r5,Huge?,{'x' * (MAX_ANSWER_CHARS + 1)},,\n"
        "r6,Last one?,Fine.,A; B,x|y\n"
    )
    result = parse_text(content, fmt="csv")
    assert [r.entry.external_id for r in result.rows] == ["r1", "r2", "r6"]
    assert [r.line for r in result.rows] == [2, 3, 8]
    first = result.rows[0].entry
    assert (first.question, first.answer, first.source, first.tags) == (
        "How do I reset?",
        "Use the link.",
        "Help centre",
        ("account",),
    )
    assert result.rows[2].entry.tags == ("x", "y")
    issues = {i.line: i.reason for i in result.issues}
    assert set(issues) == {5, 6, 7}
    assert "2 fields" in issues[5]
    assert "question is empty" in issues[6]
    assert f"limit is {MAX_ANSWER_CHARS}" in issues[7]


def test_mapping_names_other_columns() -> None:
    content = "Title;Body;Link;Also\nWhere is it?;Here.;https://x.test/1;Where's it?|Location?\n"
    result = parse_text(
        content,
        fmt="csv",
        mapping=parse_mapping(["question=Title", "answer=Body", "alternatives=Also"]),
    )
    entry = result.rows[0].entry
    assert entry.question == "Where is it?"
    assert entry.source == "https://x.test/1"
    assert entry.alternatives == ("Where's it?", "Location?")


def test_missing_answer_column_is_fatal_with_a_hint() -> None:
    with pytest.raises(KnowledgeImportError, match=r"no answer column.*--map answer="):
        parse_text("question,text\nq?,t\n", fmt="csv")
    with pytest.raises(KnowledgeImportError, match="no column 'Nope'"):
        parse_text("question,answer\nq?,a\n", fmt="csv", mapping={"answer": "Nope"})
    with pytest.raises(KnowledgeImportError, match="FIELD=COLUMN"):
        parse_mapping(["question"])
    with pytest.raises(KnowledgeImportError, match="unknown field"):
        parse_mapping(["colour=Red"])


def test_jsonl_bad_lines_are_skipped_with_their_numbers() -> None:
    content = (
        '{"id": "a", "question": "One?", "answer": "1", "sources": ["S1", "S2"]}\n'
        "\n"
        '{"id": "b", "question": "Two?", "answer": "2"\n'
        '["not", "an", "object"]\n'
        '{"id": "c", "question": "Three?", "answer": "3", "alternatives": ["3?"]}\n'
    )
    result = parse_text(content, fmt="jsonl")
    assert [(r.line, r.entry.external_id) for r in result.rows] == [(1, "a"), (5, "c")]
    assert result.rows[0].entry.source == "S1; S2"
    assert result.rows[1].entry.alternatives == ("3?",)
    assert [(i.line, i.reason.split(":")[0]) for i in result.issues] == [
        (3, "not valid JSON"),
        (4, "expected an object, found list"),
    ]


def test_json_array_reports_item_lines_and_rejects_broken_documents() -> None:
    content = (
        '{"entries": [\n'
        '  {"question": "One?", "answer": "1"},\n'
        '  {"question": "Two?",\n'
        '   "answer": ""},\n'
        '  {"question": "Three?", "answer": "3"}\n'
        "]}\n"
    )
    result = parse_text(content, fmt="json")
    assert [r.line for r in result.rows] == [2, 5]
    assert [(i.line, i.reason) for i in result.issues] == [(3, "the answer is empty")]
    with pytest.raises(KnowledgeImportError, match="not valid JSON"):
        parse_text('[{"question": "x", "answer": "y"', fmt="json")


def test_markdown_headings_sections_and_fields() -> None:
    content = (
        "# Billing\n"
        "\n"
        "## How do I pay?\n"
        "By card or invoice.\n"
        "Source: https://help.test/pay\n"
        "Id: pay-1\n"
        "\n"
        "## Can I get a refund?\n"
        "\n"
        "# Shipping\n"
        "## How long does delivery take?\n"
        "Two to three days.\n"
    )
    result = parse_text(content, fmt="markdown")
    assert [(r.line, r.entry.question) for r in result.rows] == [
        (3, "How do I pay?"),
        (11, "How long does delivery take?"),
    ]
    pay = result.rows[0].entry
    assert (pay.answer, pay.source, pay.external_id, pay.tags) == (
        "By card or invoice.",
        "https://help.test/pay",
        "pay-1",
        ("Billing",),
    )
    assert result.rows[1].entry.tags == ("Shipping",)
    assert [(i.line, i.reason) for i in result.issues] == [(8, "the answer is empty")]


def test_duplicate_keys_in_one_file_keep_the_later_row() -> None:
    content = "question,answer\nSame question?,old\nsame question,new\n"
    result = parse_text(content, fmt="csv")
    assert [r.entry.answer for r in result.rows] == ["new"]
    assert result.issues[0].line == 2 and "line 3" in result.issues[0].reason


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeImportError, match="cannot read"):
        parse_file(tmp_path / "missing.csv")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("question,answer\nK\xf6p?,Ja\n".encode("latin-1"))
    with pytest.raises(KnowledgeImportError, match="not UTF-8"):
        parse_file(bad)
    odd = tmp_path / "faq.xlsx"
    odd.write_text("x")
    with pytest.raises(KnowledgeImportError, match="cannot tell the format"):
        parse_file(odd)
