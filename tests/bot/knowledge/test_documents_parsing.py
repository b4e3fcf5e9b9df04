"""Reading each format into sections with heading paths, anchors and pages,
boilerplate left out; and each kind of bad input refused with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.knowledge.documents.chunking import MAX_WORDS, chunk_sections
from bot.knowledge.documents.parsing import DocumentError, Section, format_of, parse
from tests.docs_support import (
    HTML,
    MARKDOWN,
    docx_bytes,
    pdf_bytes,
    scanned_pdf_bytes,
    write_bad_inputs,
)


def test_markdown_sections_carry_the_heading_path_and_anchor() -> None:
    doc = parse(MARKDOWN.encode(), name="handbook.md", fmt="markdown")
    assert doc.title == "Support Handbook"
    closing = next(s for s in doc.sections if "close your account" in s.text)
    assert closing.path == ("Support Handbook", "Accounts", "Closing an account")
    assert closing.anchor == "closing-an-account"
    lost = next(s for s in doc.sections if "traced by the carrier" in s.text)
    assert lost.path == ("Support Handbook", "Deliveries", "Lost parcels")


def test_html_leaves_navigation_toc_and_footer_out() -> None:
    doc = parse(HTML.encode(), name="policies.html", fmt="html")
    text = " ".join(s.text for s in doc.sections)
    assert "two-year warranty" in text and "never expire" in text
    for boilerplate in ("ZEBRAWORD", "TOCWORD", "FLAMINGOWORD"):
        assert boilerplate not in text
    warranty = next(s for s in doc.sections if "warranty" in s.text)
    assert warranty.anchor == "warranty"
    assert warranty.path == ("Store Policies", "Warranty")
    assert doc.title == "Store Policies"


def test_html_anchor_of_a_docbook_section() -> None:
    page = (
        b'<html><body><div class="section"><div class="titlepage"><h2 class="title">'
        b'<a name="ch-setup"></a>Setting up</h2></div><p>Run the installer.</p></div>'
        b"</body></html>"
    )
    doc = parse(page, name="x.html", fmt="html")
    assert doc.sections[0].anchor == "ch-setup"


def test_pdf_pages_are_physical_and_one_based_with_outline_sections() -> None:
    doc = parse(pdf_bytes(), name="manual.pdf", fmt="pdf")
    assert doc.title == "Kettle Manual"
    by_page = {s.page: s for s in doc.sections}
    assert "Descale" in by_page[1].text and by_page[1].path == ("Cleaning",)
    assert "blinks three times" in by_page[2].text and by_page[2].path == ("Troubleshooting",)
    assert by_page[3].path == ("Specifications",)


def test_docx_headings_become_the_path() -> None:
    doc = parse(docx_bytes(), name="onboarding.docx", fmt="docx")
    parking = next(s for s in doc.sections if "blue garage" in s.text)
    assert parking.path == ("Team Onboarding", "Parking")
    assert parking.anchor == "parking"


def test_text_in_another_encoding_is_read_with_a_warning() -> None:
    doc = parse(
        "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e: open daily.\n".encode("cp1252"),
        name="menu.txt",
        fmt="text",
    )
    assert "Café" in doc.sections[0].text
    assert doc.warnings and "not UTF-8" in doc.warnings[0]


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        ("a.md", "", "markdown"),
        ("A.HTM", "", "html"),
        ("x", "application/pdf", "pdf"),
        ("page", "text/html; charset=utf-8", "html"),
        ("notes.txt", "text/plain", "text"),
        ("guide.md", "text/plain", "markdown"),
        ("image.png", "", None),
    ],
)
def test_format_of(name: str, content_type: str, expected: str | None) -> None:
    assert format_of(name, content_type) == expected


def test_bad_inputs_are_refused_with_their_reason(tmp_path: Path) -> None:
    expected = write_bad_inputs(tmp_path)
    for name, reason in expected.items():
        if name == "huge.txt":
            continue  # the size limit is the library's (tests/bot/knowledge/test_documents.py)
        fmt = format_of(name)
        assert fmt is not None
        with pytest.raises(DocumentError) as caught:
            parse((tmp_path / name).read_bytes(), name=name, fmt=fmt)
        assert reason in str(caught.value), (name, str(caught.value))
    with pytest.raises(DocumentError, match=r"^no text layer; it needs OCR$"):
        parse(scanned_pdf_bytes(), name="s.pdf", fmt="pdf")


def test_chunks_stay_within_a_section_and_a_size() -> None:
    long = " ".join(f"Sentence number {n} says something." for n in range(300))
    sections = [
        Section(("Guide", "Long"), "long", None, long),
        Section(("Guide", "Short"), "short", 4, "Just this."),
    ]
    chunks = chunk_sections(sections)
    assert len(chunks) > 3
    assert all(len(c.text.split()) <= MAX_WORDS + 40 for c in chunks)
    assert chunks[-1].section == "Guide › Short" and chunks[-1].page == 4
    assert {c.anchor for c in chunks[:-1]} == {"long"}
    assert " ".join(c.text for c in chunks[:-1]).split() == long.split()
